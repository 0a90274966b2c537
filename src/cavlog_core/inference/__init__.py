"""Inference: anomaly maps for whole volumes, their normalisation, and thresholds.

``predict`` is imported lazily so that training code can use :func:`normalize_maps` and
:func:`healthy_thresholds` without pulling in the data and checkpoint layers.
"""

from __future__ import annotations

import importlib
from typing import Any

from .maps import erode_masks, normalize_maps
from .thresholds import healthy_thresholds, parse_threshold, threshold_strategies

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

_LAZY = {"PredictEvent", "PredictResult", "predict", "predict_volume"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.predict"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
