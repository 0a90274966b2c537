"""Thresholds that turn [0, 1] anomaly maps into lesion masks without looking at any lesion.

The paper (Silva-Rodríguez et al., BMVC 2021, Sec. 4) reports DICE at a fixed threshold of 0.5 and
at the ground-truth operating point. A threshold chosen with ground truth is not available to a user
of an unsupervised method, so training also stores *healthy* thresholds: for each healthy slice the
p-th percentile of its normalised map inside the brain, averaged over slices. ``healthy_p95`` flags
about 5 % of healthy brain pixels.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import CavlogError

__all__ = [
    "DEFAULT_HEALTHY_KEY",
    "HEALTHY_FPRS",
    "HEALTHY_PERCENTILES",
    "fpr_key",
    "healthy_fpr_thresholds",
    "healthy_key",
    "healthy_thresholds",
    "mask_in_brain",
    "parse_threshold",
    "threshold_strategies",
]

#: Percentiles stored in every checkpoint.
HEALTHY_PERCENTILES: tuple[float, ...] = (85.0, 90.0, 95.0, 98.0, 99.0)
#: Voxel false-positive rates (%) on healthy tissue for which a threshold is stored: the map value
#: above which that share of all healthy validation brain pixels falls (pooled, not per image).
HEALTHY_FPRS: tuple[float, ...] = (0.5, 1.0, 5.0)
#: What ``--threshold healthy`` means.
DEFAULT_HEALTHY_KEY = "healthy_p95"

_HEALTHY_RE = re.compile(r"^healthy(?:[:_]p?(\d+(?:\.\d+)?))?$")
_FPR_RE = re.compile(r"^healthy[:_]fpr(\d+(?:\.\d+)?)$")
_IMAGES_PER_CHUNK = 128  # bounds the sort buffer to ~128 * R² floats


def healthy_key(percentile: float) -> str:
    """Key of a healthy percentile: ``95 -> "healthy_p95"``, ``97.5 -> "healthy_p97.5"``."""
    return f"healthy_p{float(percentile):g}"


def fpr_key(fpr: float) -> str:
    """Key of a false-positive-rate threshold: ``1 -> "healthy_fpr1"``, ``0.5 -> ...fpr0.5``."""
    return f"healthy_fpr{float(fpr):g}"


def healthy_fpr_thresholds(values: Tensor | Sequence[float], fprs: Sequence[float] = HEALTHY_FPRS
                           ) -> dict[str, float]:
    """Thresholds with a stated voxel false-positive rate on healthy tissue.

    Parameters
    ----------
    values : 1-D tensor or array
        Normalised map values of *healthy* brain pixels, pooled over all validation slices.
    fprs : sequence of float
        Rates in percent, in (0, 100).

    Returns
    -------
    dict
        ``{"healthy_fpr1": t, ...}``: ``t`` is the ``1 - fpr / 100`` quantile of ``values``
        (linear interpolation), so that ``map >= t`` flags about ``fpr`` % of healthy pixels.
    """
    import numpy as np

    v = np.asarray(values.detach().cpu() if isinstance(values, Tensor) else values,
                   dtype=np.float64).ravel()
    if v.size == 0:
        raise CavlogError("healthy false-positive thresholds: no healthy brain pixel")
    if any(not 0 < f < 100 for f in fprs):
        raise CavlogError(f"fprs={tuple(fprs)}: each rate must be in (0, 100) percent")
    qs = np.quantile(v, [1 - f / 100 for f in fprs])
    return {fpr_key(f): float(q) for f, q in zip(fprs, qs)}


def healthy_thresholds(
    maps: Tensor,
    brain: Tensor,
    percentiles: Sequence[float] = HEALTHY_PERCENTILES,
) -> dict[str, float]:
    """Per-image percentiles of normalised maps inside the brain, averaged over images.

    Parameters
    ----------
    maps : (B, 1, R, R) Tensor
        Normalised anomaly maps of *healthy* slices (output of
        :func:`~cavlog_core.maps.normalize.normalize_maps`).
    brain : (B, 1, R, R) bool Tensor
        Brain masks; images without brain pixels are skipped.
    percentiles : sequence of float
        Percentiles in [0, 100]; linear interpolation between order statistics (as
        ``numpy.percentile``'s default).

    Returns
    -------
    dict
        ``{"healthy_p85": float, ...}``, one key per percentile (see :func:`healthy_key`).
    """
    qs = [float(q) for q in percentiles]
    if not qs or any(not 0.0 <= q <= 100.0 for q in qs):
        raise CavlogError(f"percentiles={tuple(percentiles)}: need at least one value in [0, 100]")
    if maps.shape != brain.shape or maps.ndim < 2:
        raise CavlogError(
            f"maps of shape {tuple(maps.shape)} and brain masks of shape {tuple(brain.shape)}: "
            "expected two (B, 1, R, R) tensors of the same shape"
        )
    values = maps.detach().reshape(maps.shape[0], -1).to(torch.float32)
    masks = brain.detach().reshape(brain.shape[0], -1).to(device=values.device, dtype=torch.bool)
    q = torch.tensor(qs, dtype=torch.float64, device=values.device) / 100.0

    total = torch.zeros(len(qs), dtype=torch.float64, device=values.device)
    used = 0
    for start in range(0, values.shape[0], _IMAGES_PER_CHUNK):
        v = values[start:start + _IMAGES_PER_CHUNK]
        m = masks[start:start + _IMAGES_PER_CHUNK]
        n = m.sum(dim=1)
        keep = n > 0
        if not bool(keep.any()):
            continue
        v, m, n = v[keep], m[keep], n[keep]
        # Non-brain pixels sort to the end, so row i's brain values are its first n_i entries.
        ordered = torch.where(m, v, torch.inf).sort(dim=1).values.to(torch.float64)
        pos = (n.to(torch.float64) - 1).unsqueeze(1) * q  # (b, Q) fractional ranks
        lo = pos.floor().long()
        hi = torch.minimum(lo + 1, (n - 1).unsqueeze(1))
        frac = pos - lo
        val = ordered.gather(1, lo) * (1 - frac) + ordered.gather(1, hi) * frac
        total += val.sum(dim=0)
        used += int(v.shape[0])
    if used == 0:
        raise CavlogError(f"healthy thresholds: none of the {maps.shape[0]} maps has brain pixels")
    means = (total / used).tolist()
    return {healthy_key(p): float(m) for p, m in zip(qs, means)}


def parse_threshold(spec: str | float, thresholds: Mapping[str, float] | None) -> tuple[float, str]:
    """Resolve a ``--threshold`` value to ``(threshold, label)``.

    Parameters
    ----------
    spec : str or float
        ``"0.5"`` or any number in [0, 1] (label ``"fixed_0.5"``), ``"healthy"``
        (= ``healthy_p95``), or ``"healthy:pXX"`` / ``"healthy:XX"`` / ``"healthy_pXX"`` for a
        stored percentile.
    thresholds : mapping or None
        The checkpoint's healthy thresholds (``{"healthy_p95": 0.61, ...}``).

    Returns
    -------
    (float, str)
        The threshold (a mask is ``map >= threshold``) and a label for reports.
    """
    if not isinstance(spec, str):
        value = float(spec)
        text = f"{value:g}"
    else:
        text = spec.strip().lower()
    fpr = _FPR_RE.match(text)
    if fpr:
        key = fpr_key(float(fpr.group(1)))
        if key not in (thresholds or {}):
            have = ", ".join(sorted(thresholds or {})) or "none"
            raise CavlogError(f"threshold {spec!r}: the checkpoint has no {key} (available: "
                              f"{have}; checkpoints trained before this option have none: "
                              "fine-tune or retrain to get them)")
        return float(thresholds[key]), key  # type: ignore[index]
    match = _HEALTHY_RE.match(text)
    if match:
        key = DEFAULT_HEALTHY_KEY if match.group(1) is None else healthy_key(float(match.group(1)))
        available = sorted(thresholds or {})
        if key not in (thresholds or {}):
            have = ", ".join(available) if available else "none"
            raise CavlogError(
                f"threshold {spec!r}: the checkpoint has no {key} (available: {have})"
            )
        return float(thresholds[key]), key  # type: ignore[index]
    try:
        value = float(text)
    except ValueError:
        raise CavlogError(
            f"threshold {spec!r}: expected a number in [0, 1], 'healthy' or 'healthy:pXX'"
        ) from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise CavlogError(f"threshold {spec!r}: must be in [0, 1] (maps are normalised to [0, 1])")
    return value, f"fixed_{value:g}"


def threshold_strategies(
    thresholds: Mapping[str, float] | None, *, fixed: Sequence[float] = (0.5,)
) -> dict[str, float]:
    """Label -> threshold for every strategy a report evaluates.

    ``fixed_0.5`` (the paper's fixed threshold) followed by the checkpoint's ``healthy_pXX`` keys in
    increasing percentile order. No ground truth is used by any of them.
    """
    out = {f"fixed_{float(v):g}": float(v) for v in fixed}
    healthy = {
        k: float(v) for k, v in (thresholds or {}).items()
        if k.startswith("healthy_p") and math.isfinite(float(v))
    }
    for key in sorted(healthy, key=lambda k: float(k[len("healthy_p"):])):
        out[key] = healthy[key]
    fpr = {k: float(v) for k, v in (thresholds or {}).items()
           if k.startswith("healthy_fpr") and math.isfinite(float(v))}
    for key in sorted(fpr, key=lambda k: -float(k[len("healthy_fpr"):])):
        out[key] = fpr[key]
    return out


def mask_in_brain(anomaly: np.ndarray, brain: np.ndarray, threshold: float) -> np.ndarray:
    """Return the segmentation ``brain & (anomaly >= threshold)`` (bool, same shape).

    The one definition used by ``cavlog predict``, calibration, evaluation's operating points
    and the plugin (whose ``ThresholdCache.mask`` is a faster equal form, tested): a voxel is
    anomalous when it is inside the brain and its normalised map value is at least the
    threshold.
    """
    anomaly, brain = np.asarray(anomaly), np.asarray(brain, dtype=bool)
    if anomaly.shape != brain.shape:
        raise CavlogError(f"mask_in_brain: map {anomaly.shape} and brain {brain.shape} differ")
    return brain & (anomaly >= threshold)
