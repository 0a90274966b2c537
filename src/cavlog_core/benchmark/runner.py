"""Running a benchmark: every setting × seed trained and evaluated on one fixed patient split.

Each run lives in ``DIR/<label>/seed<k>/`` (``checkpoint.pt``, ``config.json``, ``log.jsonl`` from
:func:`cavlog_core.training.fit`, and ``result.json``); a run with a ``result.json`` is skipped, a
run with an unfinished checkpoint is resumed, so an interrupted benchmark continues where it
stopped. Every setting sees the same split, the same preprocessed slices and the same number of
iterations (the training budget).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .._atomic import atomic_write_text
from .._lock import FolderBusy, folder_lock
from .._progress import relay
from ..config import RunConfig
from ..data import SliceArrays, find_cases, iter_slice_arrays, split_cases
from ..errors import CavlogError
from ..evaluate import EvaluationReport, evaluate
from ..training import fit, load_checkpoint, read_checkpoint
from .settings import Setting

__all__ = [
    "RESULT_NAME",
    "BenchmarkData",
    "BenchmarkEvent",
    "RunBusy",
    "RunResult",
    "load_result",
    "prepare_data",
    "run_lock",
    "run_one",
]

RESULT_NAME = "result.json"
#: PR-curve points kept per run in ``result.json`` (for the plots).
PR_POINTS = 200

Stage = Literal["prepare", "train", "evaluate", "skip", "done", "failed", "wait", "summary"]


@dataclass(frozen=True)
class BenchmarkEvent:
    """Progress of a benchmark.

    Attributes
    ----------
    stage : {"prepare", "train", "evaluate", "skip", "done", "failed", "wait", "summary"}
        ``skip``: the run already has a result; ``done``: a run just finished; ``failed``: it
        raised (only with ``keep_going``; ``message`` says why); ``wait``: another process
        holds the run, it is retried after the others.
    run, total_runs : int
        1-based index of the current run and the number of runs (0 during ``prepare``).
    label : str
    seed : int
    step, total_steps : int
        Iterations (``train``) or scans (``evaluate``, ``prepare``) done so far and in total.
    metrics : dict
        For ``done``/``skip``: the run's headline metrics; ``train``: the last losses.
    """

    stage: Stage
    run: int = 0
    total_runs: int = 0
    label: str = ""
    seed: int = 0
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    # The library's common progress vocabulary (cavlog_core.Progress).
    @property
    def done(self) -> int:
        """The ``step``."""
        return self.step

    @property
    def total(self) -> int:
        """The ``total_steps``."""
        return self.total_steps
    message: str = ""


@dataclass(frozen=True, eq=False)
class BenchmarkData:
    """The fixed split and the preprocessed training / validation slices shared by every run.

    ``val`` is None when the validation split has no healthy slice (``fit`` then computes the
    healthy thresholds on training slices); both are None when only the split was asked for.
    """

    root: Path
    split: dict[str, list[str]]
    split_seed: int
    train: SliceArrays | None
    val: SliceArrays | None


@dataclass(frozen=True)
class RunResult:
    """One finished run (read back from ``result.json``)."""

    label: str
    method: str
    seed: int
    run_dir: Path
    data: dict[str, Any]
    skipped: bool = False

    @property
    def metrics(self) -> dict[str, Any]:
        """The run's evaluation metrics (``result.json["metrics"]``)."""
        return self.data["metrics"]


def prepare_data(
    root: str | Path, base: RunConfig, *, split_seed: int = 0,
    cache_dir: str | Path | None = None, slices: bool = True,
) -> Generator[BenchmarkEvent, None, BenchmarkData]:
    """Split ``root`` once and preprocess the lesion-free slices of its train and val cases.

    The split is ``split_cases(ids, base.train.split_fractions, split_seed)``; the slices follow
    ``base.preprocess`` (skipped when ``slices`` is False).

    Yields ``prepare`` events per case; returns :class:`BenchmarkData`.
    """
    root = Path(root)
    cases = find_cases(root)
    split = split_cases([c.case_id for c in cases], base.train.split_fractions, split_seed)
    if not split["train"] or not split["test"]:
        raise CavlogError(f"{root}: {len(cases)} case(s) give an empty train or test split with "
                          f"split_fractions={base.train.split_fractions}; a benchmark needs both")
    by_id = {c.case_id: c for c in cases}
    total = len(split["train"]) + len(split["val"])

    def build(ids: list[str], required: bool, before: int) -> Generator[BenchmarkEvent, None, Any]:
        if not ids:
            return None
        gen = iter_slice_arrays([by_id[i] for i in ids], base.preprocess, cache_dir=cache_dir,
                                healthy_only=True)
        try:
            return (yield from relay(gen, lambda p: BenchmarkEvent(
                "prepare", step=before + p.done, total_steps=total)))
        except CavlogError:
            if required:
                raise
            return None

    if not slices:
        return BenchmarkData(root=root, split=split, split_seed=split_seed, train=None, val=None)
    train = yield from build(split["train"], True, 0)
    val = yield from build(split["val"], False, len(split["train"]))
    return BenchmarkData(root=root, split=split, split_seed=split_seed, train=train, val=val)


def load_result(run_dir: Path) -> dict[str, Any] | None:
    """Return the run's ``result.json`` as a dict, or None when absent or unreadable (run again)."""
    path = run_dir / RESULT_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "metrics" in data else None


#: Settings that may differ between a stored run and the current invocation (they do not change
#: what is learned): where it runs and how often it logs.
_FREE_FIELDS = {("train", "device"), ("train", "amp"), ("train", "log_every"),
                ("train", "checkpoint_every")}


def config_difference(stored: dict[str, Any], current: RunConfig) -> str | None:
    """First field where a stored run's config differs from ``current``, as text; None if equal.

    Device, autocast and logging settings are ignored; fields the stored config lacks (added to
    the library later) take their defaults.
    """
    try:
        old_cfg = RunConfig.from_dict(stored if isinstance(stored, dict) else {})
    except (CavlogError, TypeError) as err:
        return f"its stored configuration is not readable here ({err})"
    old = json.loads(json.dumps(old_cfg.to_dict()))  # tuples -> lists
    now = json.loads(json.dumps(current.to_dict()))
    for section, fields in now.items():
        for name, value in fields.items():
            before = old[section][name]
            if (section, name) not in _FREE_FIELDS and before != value:
                return f"{section}.{name} = {before!r} there, {value!r} now"
    return None


def _check_same(run_dir: Path, stored: dict[str, Any], config: RunConfig) -> None:
    diff = config_difference(stored, config)
    if diff is not None:
        raise CavlogError(f"{run_dir}: holds a run with another configuration ({diff}); use "
                          "another --out folder or delete that run")


def _checkpoint_state(ckpt: Path, config: RunConfig) -> Literal["none", "partial", "finished"]:
    if not ckpt.is_file():
        return "none"
    try:
        payload = read_checkpoint(ckpt)
    except CavlogError:
        return "none"  # corrupt (e.g. killed mid-write before the atomic rename): retrain
    _check_same(ckpt.parent, payload["config"], config)
    return "finished" if payload.get("extra", {}).get("finished") else "partial"


def _thin_curve(recall: np.ndarray, precision: np.ndarray, n: int = PR_POINTS
                ) -> dict[str, list[float]]:
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if recall.size > n:
        keep = np.unique(np.linspace(0, recall.size - 1, n).round().astype(int))
        recall, precision = recall[keep], precision[keep]
    return {"recall": [round(float(v), 5) for v in recall],
            "precision": [round(float(v), 5) for v in precision]}


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """AUROC, AUPRC and oracle DICE of a run's metrics, for progress displays."""
    keys = ("auroc", "auprc", "dice_best")
    return {k: float(metrics[k]) for k in keys if isinstance(metrics.get(k), (int, float))}


def _metrics_from_report(report: EvaluationReport) -> dict[str, Any]:
    d = report.to_dict()
    op = dict(d["operating_point"])
    out: dict[str, Any] = {k: d.get(k) for k in ("auroc", "auprc", "average_precision",
                                                  "n_pixels", "n_positive", "exact",
                                                  "error_bound", "auroc_all_pixels",
                                                  "prevalence")}
    out["reference"] = d.get("reference", {})
    out.update({k: op.get(k) for k in ("dice_best", "iou_best", "threshold_best")})
    for k in ("dice_per_scan_mean", "dice_per_scan_std"):  # at the operating point, if given
        if k in op:
            out[f"best_{k}"] = op[k]
    out["strategies"] = d["strategies"]
    out["per_scan_dice"] = d["per_scan_dice"]
    out["cases"] = d["cases"]
    out["skipped"] = d["skipped"]
    out["slices"] = d["slices"]
    out["pixels"] = d["pixels"]
    return out


class RunBusy(FolderBusy):
    """Another live process is training or evaluating this run right now."""


LOCK_NAME = "running.lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir/running.lock`` (with this process id) while a run is computed.

    Several benchmark processes may share one output folder; a run locked by another live
    process raises :class:`RunBusy`, a lock left by a dead process is taken over.
    """
    with folder_lock(run_dir, LOCK_NAME, allow_same_process=True,
                     busy=lambda owner: RunBusy(f"{run_dir}: being computed by process {owner}")):
        yield


def run_one(
    setting: Setting, seed: int, *, base: RunConfig, data: BenchmarkData, out: Path,
    eval_slices: str, all_pixels: bool = False, batch_size: int | None = None,
    run: int = 1, total_runs: int = 1, folder: str | None = None,
) -> Generator[BenchmarkEvent, None, RunResult]:
    """Train (or resume) and evaluate one setting with one seed; skip it when already done.

    The run lives in ``out/<folder or setting.label>/seed<k>``. Returns the :class:`RunResult`;
    ``result.json`` holds the metrics, the PR curve, the configuration, the split and the
    timings. Raises :class:`RunBusy` when another process holds the run's lock.
    """
    run_dir = out / (folder or setting.label) / f"seed{seed}"
    ev: dict[str, Any] = {"run": run, "total_runs": total_runs, "label": setting.label,
                          "seed": seed}
    config = setting.apply(base)
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
    done = load_result(run_dir)
    if done is not None:
        _check_same(run_dir, done.get("config", {}), config)
        was = (done.get("split", {}).get("seed"), done["metrics"].get("slices"),
               done["metrics"].get("pixels"))
        now = (data.split_seed, eval_slices, "all" if all_pixels else "brain")
        if was != now:
            raise CavlogError(f"{run_dir}: was evaluated with split seed, slices, pixels = {was}, "
                              f"not {now}; use another --out folder or delete that run")
        yield BenchmarkEvent("skip", metrics=headline(done["metrics"]), **ev)
        return RunResult(setting.label, setting.method, seed, run_dir, done, skipped=True)
    with run_lock(run_dir):
        if load_result(run_dir) is not None:  # finished by another process meanwhile
            return (yield from run_one(setting, seed, base=base, data=data, out=out,
                                       eval_slices=eval_slices, all_pixels=all_pixels,
                                       batch_size=batch_size, run=run, total_runs=total_runs,
                                       folder=folder))
        return (yield from _compute(setting, seed, config, run_dir, data, eval_slices,
                                    all_pixels, batch_size, ev))


def _compute(setting: Setting, seed: int, config: RunConfig, run_dir: Path, data: BenchmarkData,
             eval_slices: str, all_pixels: bool, batch_size: int | None, ev: dict[str, Any]
             ) -> Generator[BenchmarkEvent, None, RunResult]:
    ckpt = run_dir / "checkpoint.pt"
    state = _checkpoint_state(ckpt, config)
    if state == "none" and ckpt.exists():
        ckpt.unlink()
    t0 = time.perf_counter()
    fit_result = None
    if state != "finished":
        if data.train is None:
            raise CavlogError(f"{run_dir}: needs training but the slices were not prepared")
        gen = fit(config, data.train, out_dir=run_dir, resume=state == "partial",
                  val_data=data.val)
        fit_result = yield from relay(gen, lambda e: BenchmarkEvent(
            "train", step=e.iteration, total_steps=e.total_iterations,
            metrics={"loss": e.losses["loss"]} if "loss" in e.losses else {}, **ev,
        ) if e.phase in ("warmup", "constrained") else None)
    train_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    loaded = load_checkpoint(ckpt, device=config.train.device)
    # Evaluate on the benchmark's split, not on the one the run's own seed would give.
    split_config = dataclasses.replace(loaded.config, train=dataclasses.replace(
        loaded.config.train, seed=data.split_seed))
    loaded = dataclasses.replace(loaded, config=split_config)
    # fp32 on the CPU: benchmark figures must not depend on whether the CPU has bf16 units.
    precision = "fp32" if str(config.train.device).startswith("cpu") else "auto"
    gen_eval = evaluate(loaded, data.root, split="test", slices=eval_slices,
                        all_pixels=all_pixels, device=config.train.device,
                        batch_size=batch_size or config.train.batch_size, precision=precision)
    report: EvaluationReport = yield from relay(gen_eval, lambda e: BenchmarkEvent(
        "evaluate", step=e.done, total_steps=e.total, **ev))
    eval_s = time.perf_counter() - t1

    recall, pr_precision, _ = report.pr_curve
    result: dict[str, Any] = {
        "label": setting.label,
        "method": setting.method,
        "seed": seed,
        "setting": dataclasses.asdict(setting),
        "config": config.to_dict(),
        "split": {"seed": data.split_seed, **{k: list(v) for k, v in data.split.items()}},
        "train_slices": len(data.train) if data.train is not None else None,
        "iterations": loaded.meta.get("total_iterations"),
        "train_seconds": round(train_s, 2) if fit_result is not None else None,
        "eval_seconds": round(eval_s, 2),
        "healthy_fc_satisfied": loaded.meta.get("healthy_fc_satisfied"),
        "thresholds": loaded.thresholds,
        "metrics": _metrics_from_report(report),
        "pr_curve": _thin_curve(recall, pr_precision),
        "device": str(next((p.device for p in loaded.modules.parameters()),
                           torch.device("cpu"))),
    }
    atomic_write_text(run_dir / RESULT_NAME, json.dumps(result, indent=1) + "\n")
    yield BenchmarkEvent("done", metrics=headline(result["metrics"]), **ev)
    return RunResult(setting.label, setting.method, seed, run_dir, result)
