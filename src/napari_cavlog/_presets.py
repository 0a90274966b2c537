"""Threshold presets offered by the anomaly widget, each with what it means (no Qt).

All healthy presets come from the checkpoint (computed by ``cavlog train`` / ``finetune`` on
healthy validation slices, see ``cavlog_core.maps.thresholds``):

``healthy_fpr<r>``
    The map value above which ``r`` % of the healthy validation brain pixels fall: the expected
    false-positive rate on healthy tissue is ``r`` % (how recent benchmarks fix a threshold
    without lesion data).
``healthy_p<q>``
    The mean over healthy validation slices of each slice's ``q``-th percentile (the paper's
    healthy-percentile threshold); roughly ``100 - q`` % of healthy brain pixels lie above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["HEALTHY_PRESETS", "Preset", "default_threshold", "healthy_presets"]


@dataclass(frozen=True)
class Preset:
    """One healthy-data threshold.

    Attributes
    ----------
    key : str
        Checkpoint key (``"healthy_fpr1"``, ``"healthy_p95"``).
    label : str
        Menu text (``"FPR 1 %"``, ``"p95"``).
    value : float or None
        The threshold in this checkpoint (None when the checkpoint predates it).
    note : str
        One line saying what the threshold promises on healthy tissue.
    """

    key: str
    label: str
    value: float | None
    note: str


#: ``(key, label, note)`` in menu order: fixed false-positive rates, then percentiles.
HEALTHY_PRESETS: tuple[tuple[str, str, str], ...] = (
    *((f"healthy_fpr{r}", f"FPR {r} %",
       f"expected false-positive rate on healthy tissue: {r} % of brain voxels")
      for r in ("0.5", "1", "5")),
    *((f"healthy_p{q}", f"p{q}",
       f"mean {q}th percentile of healthy slices: about {100 - q} % of healthy brain voxels "
       "above it") for q in (85, 90, 95, 98, 99)),
)

#: Preferred starting thresholds, best first. FPR 5 % rather than 1 %: on the real BraTS cases the
#: demo model's measured rate at FPR 5 % is 1-2.5 % of healthy voxels, and FPR 1 % finds too
#: little of the lesions (docs/napari_plugin.md, "Thresholds").
_START_ORDER = ("healthy_fpr5", "healthy_p95")


def healthy_presets(thresholds: dict[str, Any] | None) -> list[Preset]:
    """Every preset of :data:`HEALTHY_PRESETS` with its value in ``thresholds`` (or None)."""
    thresholds = thresholds or {}
    out = []
    for key, label, note in HEALTHY_PRESETS:
        value = thresholds.get(key)
        out.append(Preset(key, label, None if value is None else float(value), note))
    return out


def default_threshold(thresholds: dict[str, Any] | None) -> tuple[float, str]:
    """The threshold a finished run starts at and its key: FPR 5 %, else p95, else 0.5."""
    thresholds = thresholds or {}
    for key in _START_ORDER:
        if thresholds.get(key) is not None:
            return float(thresholds[key]), key
    return 0.5, "fixed"
