"""Inference: anomaly maps of whole volumes from a trained checkpoint.

Map normalisation and thresholds live one layer down in :mod:`cavlog_core.maps` (shared with
the methods, training and evaluation); they are re-exported here for convenience.
"""

from __future__ import annotations

from ..maps import (
    erode_masks,
    healthy_thresholds,
    normalize_maps,
    parse_threshold,
    threshold_strategies,
)
from .predict import PredictEvent, PredictResult, predict, predict_volume

__all__ = [
    "PredictEvent",
    "PredictResult",
    "erode_masks",
    "healthy_thresholds",
    "normalize_maps",
    "parse_threshold",
    "predict",
    "predict_volume",
    "threshold_strategies",
]
