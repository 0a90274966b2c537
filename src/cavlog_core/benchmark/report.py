"""Benchmark outputs: the Markdown summary (Table 1 / ablation tables) and PR-curve plots.

Pooled metrics are shown as mean ± std over seeds (sample std; "±" omitted for one seed). Per-scan
DICE is shown as mean ± std over the test scans, averaged over seeds. Columns in brackets
([DICE], [IoU]) use the ground truth to pick the threshold (the oracle operating point of the
paper); the healthy-percentile columns use no lesion at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from .runner import RunResult
from .settings import Ablation

__all__ = ["COLUMNS", "aggregate", "markdown_table", "percentile_table", "plot_ablation",
           "plot_pr_curves"]

#: (header, how to read the value from a run's metrics, kind). ``pooled``: ± over seeds;
#: ``scan``: the per-scan mean, shown with the per-scan std.
COLUMNS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("AUROC", ("auroc",), "pooled"),
    ("AUROC all px", ("auroc_all_pixels",), "pooled"),
    ("AUPRC", ("auprc",), "pooled"),
    ("AP", ("average_precision",), "pooled"),
    ("[DICE]", ("dice_best",), "pooled"),
    ("[IoU]", ("iou_best",), "pooled"),
    ("[DICE]/scan", ("best_dice_per_scan_mean",), "scan"),
    ("DICE p95", ("strategies", "healthy_p95", "dice"), "pooled"),
    ("DICE/scan p95", ("strategies", "healthy_p95", "dice_per_scan_mean"), "scan"),
    ("DICE 0.5", ("strategies", "fixed_0.5", "dice"), "pooled"),
)


def _get(d: Any, path: Sequence[str]) -> float:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return math.nan
        d = d[key]
    return float(d) if isinstance(d, (int, float)) and d is not None else math.nan


def _std_path(path: tuple[str, ...]) -> tuple[str, ...]:
    return (*path[:-1], path[-1].replace("_mean", "_std"))


def _fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if math.isnan(mean):
        return "–"
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=float)
    if v.size == 0:
        return math.nan, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def aggregate(results: Sequence[RunResult]) -> dict[str, list[RunResult]]:
    """Return the runs grouped by setting label, in first-seen order."""
    groups: dict[str, list[RunResult]] = {}
    for r in results:
        groups.setdefault(r.label, []).append(r)
    return groups


def _cell(runs: list[RunResult], path: tuple[str, ...], kind: str) -> str:
    means = [_get(r.metrics, path) for r in runs]
    if kind == "scan":
        m, _ = _mean_std(means)
        s, _ = _mean_std([_get(r.metrics, _std_path(path)) for r in runs])
        return _fmt(m, s)
    return _fmt(*_mean_std(means))


def markdown_table(results: Sequence[RunResult], *, first: str = "Method") -> str:
    """One row per setting: the :data:`COLUMNS`, the healthy f_c share and training time."""
    groups = aggregate(results)
    cols = [c for c in COLUMNS if any(not math.isnan(_get(r.metrics, c[1])) for r in results)]
    head = [first, *(c[0] for c in cols), "healthy f_c≤0", "seeds", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for label, runs in groups.items():
        share = _mean_std([_get(r.data, ("healthy_fc_satisfied",)) for r in runs])[0]
        secs = _mean_std([_get(r.data, ("train_seconds",)) for r in runs])[0]
        row = [label, *(_cell(runs, c[1], c[2]) for c in cols),
               _fmt(share, digits=2), str(len(runs)),
               "–" if math.isnan(secs) else f"{secs:.0f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def percentile_table(results: Sequence[RunResult]) -> str:
    """Return the healthy-percentile ablation: a row per threshold strategy of the runs."""
    labels: list[str] = []
    for r in results:
        for k in r.metrics.get("strategies", {}):
            if k not in labels:
                labels.append(k)
    lines = ["| threshold | value | DICE (pooled) | IoU (pooled) | DICE/scan | seeds |",
             "|---|---:|---:|---:|---:|---:|"]
    for k in labels:
        runs = [r for r in results if k in r.metrics.get("strategies", {})]
        thr = _mean_std([_get(r.metrics, ("strategies", k, "threshold")) for r in runs])
        lines.append("| " + " | ".join([
            k, _fmt(*thr), _fmt(*_mean_std([_get(r.metrics, ("strategies", k, "dice"))
                                            for r in runs])),
            _fmt(*_mean_std([_get(r.metrics, ("strategies", k, "iou")) for r in runs])),
            _cell(runs, ("strategies", k, "dice_per_scan_mean"), "scan"), str(len(runs)),
        ]) + " |")
    op = [r for r in results if not math.isnan(_get(r.metrics, ("dice_best",)))]
    if op:
        lines.append("| " + " | ".join([
            "[best F1] (oracle)",
            _fmt(*_mean_std([_get(r.metrics, ("threshold_best",)) for r in op])),
            _fmt(*_mean_std([_get(r.metrics, ("dice_best",)) for r in op])),
            _fmt(*_mean_std([_get(r.metrics, ("iou_best",)) for r in op])), "–", str(len(op)),
        ]) + " |")
    return "\n".join(lines)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(results: Sequence[RunResult], path: Path, *, title: str) -> Path:
    """PR curves of every setting (its lowest seed), with AUPRC in the legend; a PNG."""
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7.5, 6))
    groups = aggregate(results)
    cmap = plt.get_cmap("tab10")
    for i, (label, runs) in enumerate(groups.items()):
        r = min(runs, key=lambda x: x.seed)
        curve = r.data.get("pr_curve", {})
        if not curve.get("recall"):
            continue
        style = ("-", "--", ":")[min(i // 10, 2)]  # 10 colours, then the next line style
        ax.plot(curve["recall"], curve["precision"], style, color=cmap(i % 10), lw=1.6,
                label=f"{label} (AUPRC {_get(r.metrics, ('auprc',)):.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def plot_ablation(results: Sequence[RunResult], ablation: Ablation, path: Path) -> Path | None:
    """AUPRC and [DICE] (mean ± std over seeds) against the ablated value, one line per group."""
    settings = [s for s in ablation.settings if s.axis is not None]
    if not settings:
        return None
    groups = aggregate(results)
    values = list(dict.fromkeys(s.value for s in settings))
    numeric = all(isinstance(v, (int, float)) for v in values)
    plt = _figure()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, key) in zip(axes, (("AUPRC", "auprc"), ("[DICE] (oracle)", "dice_best"))):
        for group in dict.fromkeys(s.group for s in settings):
            xs, ms, ss = [], [], []
            for s in settings:
                if s.group != group or s.label not in groups:
                    continue
                m, sd = _mean_std([_get(r.metrics, (key,)) for r in groups[s.label]])
                xs.append(s.value if numeric else values.index(s.value))
                ms.append(m)
                ss.append(0.0 if sd is None else sd)
            if xs:
                ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=group or "constrained")
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        elif settings[0].axis == "lam":
            ax.set_xscale("log")
        ax.set(xlabel=settings[0].axis, ylabel=name, title=f"{ablation.name}: {name}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
