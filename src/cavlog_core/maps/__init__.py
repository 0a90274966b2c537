"""Anomaly maps after the network: normalisation inside the brain and thresholds (no model).

Shared by the methods, training (healthy thresholds of validation maps), inference and
evaluation, so it sits below all of them (docs/ARCHITECTURE.md, "Layers").
"""

from .normalize import erode_masks, normalize_maps
from .thresholds import (
    HEALTHY_FPRS,
    fpr_key,
    healthy_fpr_thresholds,
    healthy_thresholds,
    mask_in_brain,
    parse_threshold,
    threshold_strategies,
)

__all__ = [
    "HEALTHY_FPRS",
    "erode_masks",
    "fpr_key",
    "healthy_fpr_thresholds",
    "healthy_thresholds",
    "mask_in_brain",
    "normalize_maps",
    "parse_threshold",
    "threshold_strategies",
]
