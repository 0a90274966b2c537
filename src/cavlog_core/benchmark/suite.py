"""The benchmark driver behind ``cavlog benchmark``: settings × seeds, then summary and plots."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_write_text
from .._progress import drain
from ..config import RunConfig
from ..data.preprocess import select_slices
from ..device import resolve_device, warn_if_cpu_fallback
from ..errors import CavlogError
from . import report
from .runner import (
    BenchmarkData,
    BenchmarkEvent,
    RunBusy,
    RunResult,
    load_result,
    prepare_data,
    run_one,
)
from .settings import (
    HEALTHY_PERCENTILE_ABLATION,
    Ablation,
    Setting,
    ablation,
    method_settings,
    run_folders,
)

__all__ = ["BenchmarkConfig", "BenchmarkResult", "benchmark", "run_benchmark"]

#: Seconds between checks when only runs held by other processes are left.
BUSY_POLL_S = 2.0


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to benchmark and where.

    Attributes
    ----------
    data : Path
        Dataset root with ground truth for the test cases.
    out : Path
        Output folder: ``<label>/seed<k>/`` per run, ``summary.md`` and ``pr_curves.png``
        (``summary_<ablation>.md``, ``pr_curves_<ablation>.png``, ``ablation_<ablation>.png``
        for an ablation), so Table 1 and every ablation can share one folder; a setting equal to
        another one (the default model, a cell on another ablation's line) reuses its runs
        (:func:`~cavlog_core.benchmark.settings.run_folders`). Several processes may share
        it (runs are locked while computed).
    base : RunConfig
        Shared preprocessing, model and training budget; each setting overrides its method and
        ablated fields. ``base.preprocess.slices`` selects the *training* slices.
    methods : str
        ``"all"`` or comma-separated method names (Table 1); ignored when ``ablation`` is set.
    ablation : str or None
        One of :data:`~cavlog_core.benchmark.settings.ABLATIONS`.
    seeds : int or tuple of int
        ``N``: training seeds ``0 .. N - 1``; a tuple: exactly those seeds (e.g. to spread one
        benchmark over several processes sharing ``out``).
    split_seed : int
        Seed of the one patient split shared by every run.
    eval_slices : str
        Test slices (the paper: ``"central:10"``).
    all_pixels : bool
        Pool every pixel of the slices instead of the brain only.
    cache_dir : Path or None
        Slice cache (default: next to the data, or ``~/.cache/cavlog``).
    command : str or None
        The command line, recorded in the summary.
    summarize_only : bool
        Train and evaluate nothing: summarise the runs that already have a ``result.json``.
    keep_going : bool
        A run that fails (any exception) is reported and the next one starts; by default the
        first failure stops the benchmark.
    write_summary : bool
        Write ``summary*.md`` and the plots at the end (False for the helper processes of
        ``cavlog benchmark --parallel``: the main process writes them once all runs are done).
    """

    data: Path
    out: Path
    base: RunConfig
    methods: str = "all"
    ablation: str | None = None
    seeds: int | tuple[int, ...] = 3
    split_seed: int = 0
    eval_slices: str = "central:10"
    all_pixels: bool = False
    cache_dir: Path | None = None
    command: str | None = None
    summarize_only: bool = False
    keep_going: bool = False
    write_summary: bool = True

    def __post_init__(self) -> None:
        seeds = self.seeds
        if isinstance(seeds, int):
            if seeds < 1:
                raise CavlogError(f"seeds={seeds}: must be >= 1")
        elif not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
            raise CavlogError(f"seeds={seeds}: need distinct non-negative seeds")
        else:
            object.__setattr__(self, "seeds", tuple(int(s) for s in seeds))
        # Accept str paths from API callers; frozen, so set through object.
        object.__setattr__(self, "data", Path(self.data))
        object.__setattr__(self, "out", Path(self.out))
        if self.cache_dir is not None:
            object.__setattr__(self, "cache_dir", Path(self.cache_dir))

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The training seeds, in run order."""
        return tuple(range(self.seeds)) if isinstance(self.seeds, int) else self.seeds

    def settings(self) -> tuple[Ablation | None, tuple[Setting, ...]]:
        """Return the ablation (or None for Table 1) and its settings."""
        if self.ablation is not None:
            a = ablation(self.ablation)
            return a, a.settings
        return None, method_settings(self.methods)


@dataclass(frozen=True)
class BenchmarkResult:
    """What :func:`benchmark` returns.

    ``failed`` maps ``label/seed<k>`` to the error (with ``keep_going``) and ``missing`` lists
    runs without a result (``summarize_only``); ``summary_path`` is None (and ``plots`` empty)
    without ``write_summary``.
    """

    results: tuple[RunResult, ...]
    summary_path: Path | None
    plots: tuple[Path, ...]
    seconds: float
    failed: dict[str, str] = dataclasses.field(default_factory=dict)
    missing: tuple[str, ...] = ()


def _validate(cfg: BenchmarkConfig) -> tuple[Ablation | None, tuple[Setting, ...], RunConfig]:
    if cfg.out.exists() and not cfg.out.is_dir():
        raise CavlogError(f"{cfg.out}: exists and is not a folder")
    select_slices(np.ones((1, 1, 1), bool), cfg.eval_slices)  # a bad spec fails now, not later
    abl, settings = cfg.settings()
    for s in settings:  # every override must give a valid configuration before any training
        s.apply(cfg.base)
    # Resolve "auto" once: one CPU-fallback warning instead of one per run.
    requested = cfg.base.train.device
    device = resolve_device(requested)
    warn_if_cpu_fallback(requested, device)
    base = dataclasses.replace(cfg.base, train=dataclasses.replace(cfg.base.train,
                                                                   device=str(device)))
    return abl, settings, base


def benchmark(cfg: BenchmarkConfig) -> Generator[BenchmarkEvent, None, BenchmarkResult]:
    """Run every setting × seed (skipping finished runs), then write the summary and plots.

    Yields :class:`BenchmarkEvent` (``prepare`` per case, ``train`` per iteration, ``evaluate``
    per scan, ``skip``/``done`` per run, ``summary``); returns :class:`BenchmarkResult`.
    Runs are ordered seed by seed, so an interrupted benchmark has every setting at the first
    seeds.
    """
    t0 = time.perf_counter()
    abl, settings, base = _validate(cfg)
    data: BenchmarkData = yield from prepare_data(cfg.data, base, split_seed=cfg.split_seed,
                                                  cache_dir=cfg.cache_dir,
                                                  slices=not cfg.summarize_only)
    plan = [(s, seed) for seed in cfg.seed_list for s in settings]
    folders = run_folders(settings, base)

    def folder(setting: Setting) -> str:
        return folders[setting.label]

    done_runs: dict[int, RunResult] = {}
    failed: dict[str, str] = {}
    missing: list[str] = []
    pending = list(enumerate(plan))
    while pending:
        busy = []
        for i, (setting, seed) in pending:
            name = f"{setting.label}/seed{seed}"
            run_dir = cfg.out / folder(setting) / f"seed{seed}"
            if cfg.summarize_only:
                stored = load_result(run_dir)
                if stored is None:
                    missing.append(name)
                else:
                    done_runs[i] = RunResult(setting.label, setting.method, seed, run_dir,
                                             stored, True)
                continue
            try:
                done_runs[i] = yield from run_one(
                    setting, seed, base=base, data=data, out=cfg.out, folder=folder(setting),
                    eval_slices=cfg.eval_slices, all_pixels=cfg.all_pixels, run=i + 1,
                    total_runs=len(plan))
            except RunBusy as err:  # another process computes it: come back to it later
                busy.append((i, (setting, seed)))
                yield BenchmarkEvent("wait", run=i + 1, total_runs=len(plan),
                                     label=setting.label, seed=seed, message=str(err))
            except Exception as err:  # reported; re-raised unless keep_going
                if not cfg.keep_going:
                    raise
                failed[name] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
                yield BenchmarkEvent("failed", run=i + 1, total_runs=len(plan),
                                     label=setting.label, seed=seed, message=failed[name])
        if busy and len(busy) == len(pending):
            time.sleep(BUSY_POLL_S)  # only runs of other processes are left: wait for them
        pending = busy
    results = [done_runs[i] for i in sorted(done_runs)]
    seconds = time.perf_counter() - t0
    if not results:
        raise CavlogError(f"{cfg.out}: no finished run to summarise"
                          + (f" ({len(failed)} failed: {next(iter(failed.values()))})"
                             if failed else ""))

    if not cfg.write_summary:
        return BenchmarkResult(tuple(results), None, (), seconds, failed, tuple(missing))
    title = "Table 1" if abl is None else f"ablation {abl.name}"
    suffix = "" if abl is None else f"_{abl.name}"
    seed0 = min(r.seed for r in results)
    plots = [report.plot_pr_curves(results, cfg.out / f"pr_curves{suffix}.png",
                                   title=f"PR curves — {title} (seed {seed0})")]
    if abl is not None:
        p = report.plot_ablation(results, abl, cfg.out / f"ablation{suffix}.png")
        if p is not None:
            plots.append(p)
    text = summary_markdown(cfg, abl, data, results, seconds, plots, failed, missing)
    summary = cfg.out / f"summary{suffix}.md"
    atomic_write_text(summary, text)
    yield BenchmarkEvent("summary", total_runs=len(plan))
    return BenchmarkResult(tuple(results), summary, tuple(plots), seconds, failed,
                           tuple(missing))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary_markdown(cfg: BenchmarkConfig, abl: Ablation | None, data: BenchmarkData,
                     results: list[RunResult], seconds: float, plots: list[Path],
                     failed: dict[str, str] | None = None, missing: list[str] | None = None
                     ) -> str:
    """Return the ``summary.md`` text: setup, the table(s), notes and the plots."""
    b = cfg.base
    first = results[0].data
    m = first["metrics"]
    skipped = m.get("skipped") or {}
    train_s = sum(r.data.get("train_seconds") or 0.0 for r in results)
    eval_s = sum(r.data.get("eval_seconds") or 0.0 for r in results)
    fr = ",".join(f"{x:g}" for x in b.train.split_fractions)
    title = "Table 1: methods" if abl is None else f"Ablation `{abl.name}`: {abl.description}"
    lines = [
        f"# cavlog benchmark — {title}",
        "",
        f"- Data: `{cfg.data}`, {sum(len(v) for v in data.split.values())} cases; patient split "
        f"(seed {data.split_seed}, fractions {fr}): {len(data.split['train'])} train / "
        f"{len(data.split['val'])} val / {len(data.split['test'])} test; "
        f"{len(m.get('cases', []))} test scans evaluated"
        + (f", {len(skipped)} skipped ({'; '.join(f'{k}: {v}' for k, v in skipped.items())})"
           if skipped else ""),
        f"- Training: {first.get('train_slices', '?')} lesion-free slices "
        f"({b.preprocess.slices}) of the train "
        f"cases; {b.model.resolution}², width {b.model.width:g}, z = {b.model.latent_dim}, "
        f"{b.train.iterations} iterations (warm-up {b.train.warmup_iterations}), batch "
        f"{b.train.batch_size}, Adam lr {b.train.lr:g}; defaults p = {b.train.p:g}, "
        f"t = {b.train.t:g}, λ = {b.train.lam:g}, recon {b.train.recon}",
        f"- Evaluation: slices {m.get('slices', cfg.eval_slices)}, pixels "
        f"{m.get('pixels', 'brain')}, at model resolution; healthy thresholds from the "
        "validation healthy slices",
        f"- What the data allow: lesion prevalence {_ref(m.get('prevalence'))} (the AUPRC of a "
        f"random map); the normalised FLAIR as the map reaches AUPRC "
        f"{_ref(m.get('reference', {}).get('flair_auprc'))}, and "
        f"{_ref(m.get('reference', {}).get('flair_pooled_auprc'))} when average-pooled to the "
        f"{m.get('reference', {}).get('cam_grid', '?')}² CAM grid (layer-1 resolution)",
        f"- Seeds: {', '.join(str(s) for s in cfg.seed_list)}; device: "
        f"{first.get('device', b.train.device)}",
        f"- Compute time of these runs (from their result.json): training {_duration(train_s)}, "
        f"evaluation {_duration(eval_s)}; wall time of this invocation {_duration(seconds)} "
        f"({sum(r.skipped for r in results)} of {len(results)} runs were already done)",
    ]
    if cfg.command:
        lines.append(f"- Command: `{cfg.command}`")
    lines += ["", "## " + ("Table 1" if abl is None else "Results"), ""]
    if abl is not None and abl.name == HEALTHY_PERCENTILE_ABLATION:
        lines.append(report.percentile_table(results))
    else:
        lines.append(report.markdown_table(results, first="Method" if abl is None else "Setting"))
    lines += [
        "",
        "AUROC / AUPRC / AP: pixel-level, pooled over all test pixels, mean ± std over seeds; "
        "AUROC all px: over every pixel of the slices (the paper's convention). "
        "[DICE], [IoU]: at the F1-maximising threshold — **uses the ground truth (oracle)**, as "
        "in the paper. DICE p95 / DICE 0.5: pooled DICE with the healthy-only 95th-percentile "
        "threshold (no lesion used) and with the fixed threshold 0.5. /scan: mean ± std over "
        "test scans (averaged over seeds). healthy f_c≤0: share of healthy validation slices "
        "meeting the size constraint (attention methods).",
        "",
    ]
    if failed:
        lines += ["**Failed runs** (not in the table):", ""]
        lines += [f"- `{k}`: {v}" for k, v in failed.items()] + [""]
    if missing:
        lines += [f"**Runs without a result** (not in the table): {', '.join(missing)}", ""]
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def _ref(value: Any) -> str:
    return "?" if value is None else f"{float(value):.3f}"


def run_benchmark(cfg: BenchmarkConfig) -> BenchmarkResult:
    """Drain :func:`benchmark` and return its :class:`BenchmarkResult`."""
    return drain(benchmark(cfg))
