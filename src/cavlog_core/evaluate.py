"""Evaluating a checkpoint on the labelled scans of a split, as in the paper's Table 1.

Silva-Rodríguez, Naranjo & Dolz (BMVC 2021), Sec. 4.1: scans of the held-out test split, the N
central axial slices of each, scans with less than 0.1 % lesion dropped; pixel-level AUROC and
AUPRC pooled over every pixel of every slice, and DICE at the PR-curve operating point and at a
fixed threshold of 0.5.

Choices made here (documented in the report):

* Maps and ground truth are compared **at model resolution** (R x R, e.g. 224²) on the selected
  slices, like the paper, which evaluates the resized slices. The lesion mask is resized with the
  same geometry as the images (thresholded bilinear).
* Pixels are pooled **inside the brain mask** by default; ``all_pixels=True`` pools every pixel of
  the R x R slices (the paper's convention, which adds many easy background negatives and so
  inflates AUROC).
* Thresholds without ground truth: ``fixed_0.5`` and the checkpoint's ``healthy_pXX``. The
  F1-maximising operating point (``dice_best`` ...) **uses the ground truth (oracle)** and is
  labelled so everywhere.
* The split is the training run's: :func:`~cavlog_core.data.splits.split_cases` with the
  checkpoint's ``split_fractions`` and ``seed`` over the case ids found in DATA.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._atomic import atomic_write_text
from ._json import json_safe
from ._progress import drain
from .checkpoint import LoadedCheckpoint
from .config import InferenceConfig
from .data.io import CaseFiles, find_cases, load_case
from .data.preprocess import prepare_slices, select_slices
from .data.splits import keep_for_evaluation, lesion_fraction, split_cases
from .errors import CavlogError, InputFileError
from .inference.predict import inference_modules, iter_slice_maps, resolve_model
from .maps.thresholds import threshold_strategies
from .metrics import (
    ScoreHistogram,
    counts_at_thresholds,
    exact_curves,
    scores_from_counts,
)

_INF = InferenceConfig()  # the defaults of every inference option

__all__ = ["ORACLE_NOTE", "EvaluateEvent", "EvaluationReport", "evaluate", "run_evaluate"]

ORACLE_NOTE = "uses ground truth (oracle)"
#: Pooled pixels up to which evaluate keeps every score for exact metrics (~100 MB) and exact
#: per-scan Dice at the oracle operating point; beyond, the streaming histogram is used.
EVAL_EXACT_LIMIT = 1 << 24
Split = Literal["auto", "train", "val", "test", "all"]


@dataclass(frozen=True)
class EvaluateEvent:
    """Progress: one scan evaluated (or skipped).

    Attributes
    ----------
    done, total : int
        Scans handled so far and scans in the split.
    case_id : str
    skipped : bool
        True when the scan was dropped (lesion fraction below the minimum).
    """

    done: int
    total: int
    case_id: str
    skipped: bool = False

    @property
    def stage(self) -> str:
        """``"skip"`` for a dropped scan, else ``"evaluate"``."""
        return "skip" if self.skipped else "evaluate"


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """Result of :func:`evaluate`.

    Attributes
    ----------
    pixel : dict
        Pooled ``auroc``, ``auprc``, ``average_precision``, ``n_pixels``, ``n_positive``,
        ``exact``, ``error_bound`` (see :func:`cavlog_core.metrics.pixel_metrics`), plus
        ``auroc_brain`` and ``auroc_all_pixels`` (AUROC inside the brain and over every R x R
        pixel, the paper's convention, whatever ``pixels``) and ``prevalence`` (lesion share
        of the pooled pixels: the AUPRC of a random map).
    reference : dict
        What the data allow, from the same slices and pixels: ``flair_auprc`` (the normalised
        FLAIR itself as the map) and ``flair_pooled_auprc`` (that FLAIR average-pooled to the
        CAM grid, ``cam_grid`` x ``cam_grid``, and upsampled back: the best a CAM of that
        resolution could do with a perfect intensity detector).
    operating_point : dict
        ``dice_best``, ``iou_best``, ``threshold_best`` and ``note`` = :data:`ORACLE_NOTE`;
        with exact metrics also ``dice_per_scan_mean`` / ``dice_per_scan_std`` at that threshold.
    strategies : dict
        Label (``fixed_0.5``, ``healthy_p85`` ...) -> ``threshold``, pooled ``dice``, ``iou``,
        ``precision``, ``recall``, and ``dice_per_scan_mean`` / ``dice_per_scan_std``
        (population std over the evaluated scans).
    per_scan_dice : dict
        Case id -> {label: dice}; with exact metrics also ``"oracle"`` (at ``threshold_best``).
    pr_curve : (recall, precision, thresholds)
        Thinned PR curve (increasing recall) for plots; not written to JSON.
    """

    checkpoint: str
    data: str
    split: str
    slices: str
    pixels: str
    resolution: int
    cases: list[str]
    skipped: dict[str, str]
    pixel: dict[str, Any]
    operating_point: dict[str, Any]
    strategies: dict[str, dict[str, float]]
    per_scan_dice: dict[str, dict[str, float]]
    pr_curve: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)
    seconds: float = 0.0
    reference: dict[str, Any] = field(default_factory=dict)
    split_note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN -> None); the PR curve is left out."""
        d = {
            "checkpoint": self.checkpoint, "data": self.data, "split": self.split,
            "split_note": self.split_note, "slices": self.slices, "pixels": self.pixels,
            "resolution": self.resolution,
            "evaluated_at": "model resolution, selected slices",
            "cases": list(self.cases), "skipped": dict(self.skipped),
            **self.pixel,
            "operating_point": dict(self.operating_point),
            "strategies": {k: dict(v) for k, v in self.strategies.items()},
            "per_scan_dice": {k: dict(v) for k, v in self.per_scan_dice.items()},
            "reference": dict(self.reference),
            "seconds": self.seconds,
        }
        return json_safe(d)

    def to_json(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` atomically as indented JSON."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    def to_markdown(self) -> str:
        """Return a Markdown summary: pixel metrics and a table row per threshold strategy."""
        p = self.pixel

        def f(v: float | None, digits: int = 3) -> str:
            return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) \
                else f"{v:.{digits}f}"

        lines = [
            *([self.split_note, ""] if self.split_note else []),
            f"AUROC {f(p['auroc'])} | AUPRC {f(p['auprc'])} | AP {f(p['average_precision'])} "
            f"— split {self.split}, {len(self.cases)} scans ({len(self.skipped)} skipped), "
            f"slices {self.slices}, {p['n_pixels']} pixels ({self.pixels}) at "
            f"{self.resolution}², {p['n_positive']} lesion"
            + ("" if p["exact"] else f"; binned, error <= {p['error_bound']:.1e}"),
            "",
            f"AUROC inside the brain {f(p.get('auroc_brain'))}, over all pixels "
            f"{f(p.get('auroc_all_pixels'))} (the paper's convention); lesion prevalence "
            f"{f(p.get('prevalence'), 4)} (the AUPRC of a random map)"
            + ("" if not self.reference else
               f"; FLAIR as the map: AUPRC {f(self.reference['flair_auprc'])}, pooled to the "
               f"{self.reference['cam_grid']}² CAM grid: {f(self.reference['flair_pooled_auprc'])}"
               " (what that resolution allows)"),
            "",
            "| threshold strategy | threshold | Dice (pooled) | IoU (pooled) "
            "| Dice per scan (mean ± std) | FPR on non-lesion pixels |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, s in self.strategies.items():
            stated = (f" (stated {label.removeprefix('healthy_fpr')} %)"
                      if label.startswith("healthy_fpr") else "")
            lines.append(f"| {label} | {f(s['threshold'])} | {f(s['dice'])} | {f(s['iou'])} | "
                         f"{f(s['dice_per_scan_mean'])} ± {f(s['dice_per_scan_std'])} | "
                         f"{100 * s.get('fpr', float('nan')):.2f} %{stated} |")
        op = self.operating_point
        per_scan = (f"{f(op['dice_per_scan_mean'])} ± {f(op['dice_per_scan_std'])}"
                    if "dice_per_scan_mean" in op else "–")
        lines.append(f"| best F1 — {ORACLE_NOTE} | {f(op['threshold_best'])} | "
                     f"{f(op['dice_best'])} | {f(op['iou_best'])} | {per_scan} | – |")
        return "\n".join(lines)


def resolve_split(split: str, data: str | Path, loaded: LoadedCheckpoint,
                  n_cases: int) -> tuple[str, str]:
    """Resolve ``split="auto"`` for ``data``.

    ``auto`` is the training run's ``test`` split when ``data`` is the folder the checkpoint was
    trained on, else every case (none of them was seen in training).

    Returns the split and a one-line note saying which and why (empty for explicit splits).
    """
    if split != "auto":
        return split, ""
    trained_on = (loaded.meta.get("extra") or {}).get("data")
    same = False
    if isinstance(trained_on, str) and trained_on:
        try:
            same = Path(trained_on).resolve() == Path(data).resolve()
        except OSError:
            same = False
    if same:
        return "test", (f"{data} is this model's training data: evaluating its held-out test "
                        "split (--split all for every case)")
    where = (f"trained on {trained_on}" if isinstance(trained_on, str) and trained_on
             else "the checkpoint does not record its training data")
    return "all", (f"{data} is not this model's training data ({where}): evaluating all "
                   f"{n_cases} case(s)")


def _split_files(data: str | Path, files: list[CaseFiles], split: str,
                 loaded: LoadedCheckpoint) -> list[CaseFiles]:
    if split == "all":
        return files
    if split not in ("train", "val", "test"):
        raise CavlogError(f"split={split!r}: expected train, val, test or all")
    train = loaded.config.train
    ids = split_cases([f.case_id for f in files], train.split_fractions, train.seed)[split]
    chosen = set(ids)
    picked = [f for f in files if f.case_id in chosen]
    if not picked:
        fr = ",".join(f"{x:g}" for x in train.split_fractions)
        raise CavlogError(
            f"{data}: the {split} split is empty ({len(files)} cases, split fractions {fr}, "
            f"seed {train.seed}); use --split all to evaluate every case"
        )
    return picked


def evaluate(
    checkpoint: LoadedCheckpoint | str | Path,
    data: str | Path,
    *,
    split: Split = "test",
    slices: str | None = None,
    all_pixels: bool = False,
    device: str = "auto",
    batch_size: int = _INF.batch_size,
    exact_limit: int = EVAL_EXACT_LIMIT,
    precision: str = _INF.precision,
) -> Generator[EvaluateEvent, None, EvaluationReport]:
    """Evaluate a checkpoint on the labelled scans of a split; a generator of progress events.

    Parameters
    ----------
    checkpoint : LoadedCheckpoint or path
    data : path
        Dataset root (or a case folder / NIfTI file); every evaluated case needs a ``seg``.
    split : {"test", "val", "train", "all", "auto"}
        The training run's seeded patient split, or every case; ``auto``: ``test`` when
        ``data`` is the checkpoint's training folder, else ``all`` (:func:`resolve_split`;
        the report's ``split_note`` says which).
    slices : str, optional
        ``"central:N"`` or ``"brain"``; default the checkpoint's (the paper: ``central:10``).
    all_pixels : bool
        Pool every pixel of the R x R slices instead of the brain only.
    device : str
        ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"`` | ``"mps"``.
    batch_size : int
        Slices per network pass.
    precision : {"auto", "fp32", "bf16"}
        Compute precision of the maps (:func:`~cavlog_core.device.resolve_precision`).
    exact_limit : int
        Pooled pixels up to which metrics are exact (all scores kept in memory, 5 bytes each);
        beyond, the binned path of :mod:`cavlog_core.metrics` with its reported error bound.

    Yields
    ------
    EvaluateEvent
        One per scan of the split.

    Returns
    -------
    EvaluationReport
        Via ``StopIteration.value``; :func:`run_evaluate` drains the generator.

    Raises
    ------
    CavlogError
        Empty split, a case without ground truth (named), or no scan with enough lesion.
    """
    t0 = time.perf_counter()
    loaded, dev = resolve_model(checkpoint, device)
    pre = loaded.config.preprocess
    spec = slices or pre.slices
    select_slices(np.ones((1, 1, 1), bool), spec)  # validates the spec before any heavy work
    files, used_split, split_note = _labelled_files(data, split, loaded)
    strategies = threshold_strategies(loaded.thresholds)
    acc = _Pooled(list(strategies), np.array(list(strategies.values()), dtype=np.float64),
                  cam_grid=_cam_grid(loaded), all_pixels=all_pixels, exact_limit=exact_limit)
    twin = inference_modules(loaded.modules, dev)
    skipped: dict[str, str] = {}
    for i, f in enumerate(files):
        case = load_case(f)
        z = select_slices(case.brain_mask, spec, min_brain_fraction=pre.min_brain_fraction)
        if not keep_for_evaluation(case, z, min_lesion_fraction=pre.min_lesion_fraction):
            frac = lesion_fraction(case, z)
            skipped[case.case_id] = (f"lesion fraction {frac:.3%} < "
                                     f"{pre.min_lesion_fraction:.3%} on slices {spec}")
            yield EvaluateEvent(i + 1, len(files), case.case_id, skipped=True)
            continue
        batch = prepare_slices(case, pre, z)
        assert batch.lesion is not None  # keep_for_evaluation needs ground truth
        acc.start_scan()
        for start, maps in iter_slice_maps(loaded, batch, batch_size=batch_size, device=dev,
                                           modules=twin, precision=precision):
            stop = start + maps.shape[0]
            acc.add(maps.cpu().numpy(), batch.lesion[start:stop], batch.brain[start:stop],
                    batch.images[start:stop])
        acc.end_scan(case.case_id)
        yield EvaluateEvent(i + 1, len(files), case.case_id)

    if not acc.cases:
        raise CavlogError(
            f"{data}: no scan of the {used_split} split has a lesion fraction >= "
            f"{pre.min_lesion_fraction:.3%} on slices {spec} ({len(skipped)} skipped)"
        )
    curves, summary, pixel, reference = acc.pixel_metrics()
    operating = acc.operating_point(summary)  # adds the per-scan Dice there to per_scan
    return EvaluationReport(
        checkpoint=str(loaded.meta.get("path", checkpoint)), data=str(data),
        split=used_split, split_note=split_note,
        slices=spec, pixels="all" if all_pixels else "brain",
        resolution=loaded.config.model.resolution, cases=acc.cases, skipped=skipped,
        pixel=pixel, operating_point=operating, strategies=acc.strategy_table(summary),
        per_scan_dice=acc.per_scan,
        pr_curve=curves.pr_curve(), seconds=time.perf_counter() - t0, reference=reference,
    )


def _labelled_files(data: str | Path, split: Split,
                    loaded: LoadedCheckpoint) -> tuple[list[CaseFiles], str, str]:
    """Return the case files of ``split`` (each with ground truth), the split used, its note."""
    found = find_cases(data)
    used_split, split_note = resolve_split(split, data, loaded, len(found))
    files = _split_files(data, found, used_split, loaded)
    for f in files:
        if f.seg is None:
            raise InputFileError(f.path, f"case {f.case_id} has no ground-truth segmentation "
                                         "(<ID>_seg.nii.gz); evaluate needs one")
    return files, used_split, split_note


class _Pooled:
    """Everything :func:`evaluate` accumulates over the scans, slice batch by slice batch.

    Counts at every threshold strategy (pooled and per scan), the score histogram of the pooled
    pixels, the streamed AUROC of the pixels not pooled and of the FLAIR references, and the
    exact scores while they fit in ``exact_limit``.
    """

    def __init__(self, labels: list[str], thresholds: np.ndarray, *, cam_grid: int,
                 all_pixels: bool, exact_limit: int) -> None:
        self.labels, self.thr = labels, thresholds
        self.cam_grid, self.all_pixels, self.exact_limit = cam_grid, all_pixels, exact_limit
        self.hist = ScoreHistogram()
        # The AUROC over the pixels not pooled (all pixels, or the brain with all_pixels) and
        # the FLAIR references (full and pooled to the CAM grid), streamed: no extra memory.
        self.extra = {k: ScoreHistogram() for k in ("other", "flair", "flair_pooled")}
        self.kept_scores: list[np.ndarray] | None = []
        self.kept_labels: list[np.ndarray] = []
        self.scan_sizes: list[int] = []  # pooled pixels of each kept scan, to split them again
        self.n_kept = 0
        self.totals = np.zeros((3, thresholds.size), dtype=np.int64)
        self.per_scan: dict[str, dict[str, float]] = {}
        self.cases: list[str] = []
        self._scan = self.totals.copy()
        self._n_before = 0
        self.all_scores: np.ndarray | None = None  # every kept score, once pooled
        self.all_labels: np.ndarray | None = None

    def start_scan(self) -> None:
        """Begin the counts of one scan."""
        self._scan = np.zeros_like(self.totals)
        self._n_before = self.n_kept

    def add(self, scores: np.ndarray, lesion: np.ndarray, brain: np.ndarray,
            images: np.ndarray) -> None:
        """Add a batch of ``(B, 1, R, R)`` maps with their lesion, brain and FLAIR slices."""
        region = None if self.all_pixels else brain
        self._scan += np.stack(counts_at_thresholds(scores, lesion, self.thr, region))
        self.hist.update(scores, lesion, region)
        self.extra["other"].update(scores, lesion, brain if self.all_pixels else None)
        flair = images * brain
        self.extra["flair"].update(flair, lesion, region)
        self.extra["flair_pooled"].update(_pooled(flair, self.cam_grid), lesion, region)
        if self.kept_scores is not None:  # exact metrics while the pooled pixels stay small
            s = scores.reshape(-1) if region is None else scores[region]
            self.n_kept += s.size
            if self.n_kept > self.exact_limit:
                self.kept_scores, self.kept_labels = None, []
            else:
                self.kept_scores.append(s)
                self.kept_labels.append(lesion.reshape(-1) if region is None else lesion[region])

    def end_scan(self, case_id: str) -> None:
        """Close the scan: its Dice at every strategy, its share of the kept scores."""
        self.totals += self._scan
        self.scan_sizes.append(self.n_kept - self._n_before)
        dice_scan = scores_from_counts(*self._scan)["dice"]
        self.per_scan[case_id] = {k: float(v) for k, v in zip(self.labels, dice_scan)}
        self.cases.append(case_id)

    def pixel_metrics(self) -> tuple[Any, dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Return the pooled curves, their summary, the pixel metrics and the FLAIR references.

        The curves are exact when every score was kept, binned otherwise.
        """
        if self.kept_scores is not None:
            self.all_scores = np.concatenate(self.kept_scores)
            self.all_labels = np.concatenate(self.kept_labels)
            self.kept_scores, self.kept_labels = None, []
            curves = exact_curves(self.all_scores, self.all_labels)
        else:
            curves = self.hist.curves()
        summary = curves.summary()
        pixel = {k: summary[k] for k in ("auroc", "auprc", "average_precision", "n_pixels",
                                         "n_positive", "exact", "error_bound")}
        other = self.extra["other"].curves().summary()["auroc"]
        pixel["auroc_brain"] = other if self.all_pixels else summary["auroc"]
        pixel["auroc_all_pixels"] = summary["auroc"] if self.all_pixels else other
        pixel["prevalence"] = summary["n_positive"] / max(summary["n_pixels"], 1)
        reference = {
            "flair_auprc": self.extra["flair"].curves().summary()["auprc"],
            "flair_pooled_auprc": self.extra["flair_pooled"].curves().summary()["auprc"],
            "cam_grid": self.cam_grid,
            "note": "normalised FLAIR as the map, full resolution and average-pooled to the CAM "
                    "grid; no training, uses no ground truth to build",
        }
        return curves, summary, pixel, reference

    def operating_point(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Best Dice / IoU over thresholds; per-scan Dice there when every score was kept."""
        operating = {k: summary[k] for k in ("dice_best", "iou_best", "threshold_best")}
        operating["note"] = ORACLE_NOTE
        scores, labels = self.all_scores, self.all_labels
        if scores is not None and labels is not None \
                and not math.isnan(summary["threshold_best"]):
            bounds = np.cumsum([0, *self.scan_sizes])
            oracle = [
                scores_from_counts(*counts_at_thresholds(scores[a:b], labels[a:b],
                                                         [summary["threshold_best"]]))["dice"][0]
                for a, b in itertools.pairwise(bounds)
            ]
            for c, v in zip(self.cases, oracle):
                self.per_scan[c]["oracle"] = float(v)
            operating["dice_per_scan_mean"] = float(np.mean(oracle))
            operating["dice_per_scan_std"] = float(np.std(oracle))
        return operating

    def strategy_table(self, summary: dict[str, Any]) -> dict[str, dict[str, float]]:
        """Pooled and per-scan scores at every threshold strategy."""
        pooled = scores_from_counts(*self.totals)
        scan_dice = np.array([[self.per_scan[c][k] for k in self.labels]
                              for c in self.cases]).reshape(-1, len(self.labels))
        negatives = max(summary["n_pixels"] - summary["n_positive"], 1)
        return {
            label: {
                "threshold": float(self.thr[j]),
                **{m: float(pooled[m][j]) for m in ("dice", "iou", "precision", "recall")},
                # Voxel false-positive rate on the non-lesion pixels: what healthy_fprX promises.
                "fpr": float(self.totals[1, j]) / negatives,
                "dice_per_scan_mean": float(scan_dice[:, j].mean()),
                "dice_per_scan_std": float(scan_dice[:, j].std()),
            }
            for j, label in enumerate(self.labels)
        }


def _cam_grid(loaded: LoadedCheckpoint) -> int:
    """Side of the CAM grid: R / 2^(stage + 1) (layer1 -> R / 4, as ResNet-18's strides)."""
    model = loaded.config.model
    return max(1, model.resolution // 2 ** (model.cam_stage + 1))


def _pooled(images: np.ndarray, grid: int) -> np.ndarray:
    """``(N, 1, R, R)`` maps average-pooled to ``grid`` x ``grid`` and bilinearly upsampled."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    size = t.shape[-1]
    small = F.adaptive_avg_pool2d(t, grid)
    up = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


def run_evaluate(checkpoint: LoadedCheckpoint | str | Path, data: str | Path,
                 **kwargs: Any) -> EvaluationReport:
    """Drain :func:`evaluate` (same arguments) and return its :class:`EvaluationReport`."""
    return drain(evaluate(checkpoint, data, **kwargs))
