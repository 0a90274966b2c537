"""Turning a method's raw anomaly maps into comparable [0, 1] maps inside the brain.

Silva-Rodríguez, Naranjo & Dolz (BMVC 2021), Sec. 3.3: at inference the Grad-CAM is up-sampled to
the input and min-max normalised per image; here the normalisation runs inside a slightly eroded
brain mask so the bright skull-stripping rim cannot dominate, and everything outside is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import CavlogError

__all__ = ["erode_masks", "normalize_maps"]


def _check_pair(raw: Tensor, brain: Tensor) -> None:
    if raw.ndim != 4 or raw.shape[1] != 1:
        raise CavlogError(f"anomaly maps of shape {tuple(raw.shape)}: expected (B, 1, R, R)")
    if tuple(brain.shape) != tuple(raw.shape):
        raise CavlogError(
            f"brain mask of shape {tuple(brain.shape)} does not match maps of shape "
            f"{tuple(raw.shape)}"
        )


def erode_masks(brain: Tensor, erosion: int) -> Tensor:
    """Erode boolean masks by ``erosion`` pixels (square structuring element), batched.

    Parameters
    ----------
    brain : (B, 1, H, W) bool Tensor
        Brain masks at model resolution.
    erosion : int
        Radius in pixels; 0 returns the masks unchanged. Pixels beyond the image border count as
        outside the brain, so a brain cut by the field of view is eroded there too.

    Returns
    -------
    (B, 1, H, W) bool Tensor
        A pixel survives when every pixel within Chebyshev distance ``erosion`` is brain.
    """
    if erosion < 0:
        raise CavlogError(f"erosion={erosion}: must be >= 0")
    brain = brain.bool()
    if erosion == 0:
        return brain
    # Square erosion is separable: AND of the 2e+1 shifted copies along rows, then along
    # columns. On bool tensors this is ~30x faster on the CPU than (separable) pooling of floats.
    height, width = brain.shape[-2:]
    padded = F.pad(brain, (erosion,) * 4, value=False)  # beyond the border counts as outside
    return _all_in_window(_all_in_window(padded, erosion, height, -2), erosion, width, -1)


def _all_in_window(padded: Tensor, erosion: int, size: int, dim: int) -> Tensor:
    """AND of ``padded``'s 2e+1 windows of length ``size`` along ``dim`` (a 1-D erosion)."""
    out = padded.narrow(dim, 0, size).clone()
    for i in range(1, 2 * erosion + 1):
        out &= padded.narrow(dim, i, size)
    return out


def normalize_maps(raw: Tensor, brain: Tensor, *, erosion: int) -> Tensor:
    """Min-max normalise raw anomaly maps per image inside the eroded brain; 0 elsewhere.

    Parameters
    ----------
    raw : (B, 1, R, R) Tensor
        Raw maps from :meth:`cavlog_core.methods.Method.anomaly_maps` (higher = more anomalous),
        any float dtype; NaN/Inf pixels are ignored for the range and are 0 in the output.
    brain : (B, 1, R, R) bool Tensor
        Brain masks at model resolution.
    erosion : int
        Pixels by which the brain mask is eroded first (``PreprocessConfig.mask_erosion``).
        When erosion leaves nothing of an image's brain, the uneroded mask is used for it.

    Returns
    -------
    (B, 1, R, R) float32 Tensor
        Values in [0, 1]: ``(raw - min) / (max - min)`` over the image's eroded brain, 0 outside it.
        Images whose map is constant there, or with no brain at all, are all 0.
    """
    _check_pair(raw, brain)
    brain = brain.to(device=raw.device, dtype=torch.bool)
    inner = erode_masks(brain, erosion)
    lost = ~inner.flatten(1).any(dim=1)
    if bool(lost.any()):
        inner = torch.where(lost.view(-1, 1, 1, 1), brain, inner)

    x = raw.detach().to(torch.float32)
    finite = torch.isfinite(x)
    valid = inner & finite
    big = torch.finfo(torch.float32).max
    lo = torch.where(valid, x, big).amin(dim=(1, 2, 3), keepdim=True)
    hi = torch.where(valid, x, -big).amax(dim=(1, 2, 3), keepdim=True)
    span = hi - lo
    ok = span > 0  # constant maps and empty masks (lo > hi) stay all-zero
    scale = torch.where(ok, 1.0 / torch.where(ok, span, 1.0), 0.0)
    out = ((x - lo) * scale).clamp_(0.0, 1.0)
    return torch.where(valid & ok, out, 0.0)
