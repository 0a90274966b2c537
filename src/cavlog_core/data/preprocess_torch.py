"""Slice preparation in torch on the model's device (GPU inference).

The same steps as :func:`~cavlog_core.data.preprocess.prepare_slices` for the default
``"percentile"`` normalisation: the brain's percentiles map to [0, 1], the selected axial slices
are cut, resized and zero-padded to the model's square. On a GPU this takes a few milliseconds
per volume where the numpy path takes ~0.1 s of CPU, which would otherwise bound the throughput
of whole-volume inference. The histogram-matching options stay on the numpy path
(:func:`supports`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..config import PreprocessConfig
from ..errors import CavlogError
from .io import Case, torch_view
from .preprocess import SliceGeometry, check_slice_indices

__all__ = ["DeviceSlices", "brain_percentiles", "prepare_slices_on", "supports", "to_device"]


@dataclass(frozen=True, eq=False)
class DeviceSlices:
    """Model-ready axial slices of one case, as tensors on one device.

    Attributes
    ----------
    images : (N, 1, R, R) float32 Tensor
        Normalised FLAIR in [0, 1].
    brain : (N, 1, R, R) bool Tensor
    brain_slices : (N, X, Y) bool Tensor
        The brain mask of each slice at the volume's own resolution.
    z : (N,) int64 ndarray
        Axial index of each slice in the canonical volume.
    geometry : SliceGeometry
    case_id : str
    """

    images: Tensor
    brain: Tensor
    brain_slices: Tensor
    z: np.ndarray
    geometry: SliceGeometry
    case_id: str

    def __len__(self) -> int:
        return int(self.z.shape[0])


def supports(cfg: PreprocessConfig) -> bool:
    """Whether :func:`prepare_slices_on` implements ``cfg`` (percentiles, no histogram file)."""
    return cfg.normalization == "percentile" and cfg.histogram_reference is None


def brain_percentiles(values: Tensor, percentiles: tuple[float, float]) -> tuple[float, float]:
    """``np.percentile(values, percentiles)`` (linear interpolation) of a 1-D tensor, in float64.

    A full sort rather than ``torch.quantile``, which refuses more than 2**24 values.
    """
    if values.numel() == 0:
        raise CavlogError("intensity normalisation: the brain mask is empty")
    ordered = values.to(torch.float64).sort().values
    n = ordered.numel()
    q = torch.tensor(percentiles, dtype=torch.float64, device=values.device) / 100.0 * (n - 1)
    below = q.floor().long().clamp_(0, n - 1)
    above = (below + 1).clamp_(max=n - 1)
    frac = q - below.to(torch.float64)
    lo_hi = ordered[below] + (ordered[above] - ordered[below]) * frac
    lo, hi = lo_hi.tolist()  # one transfer for both
    return float(lo), float(hi)


def to_device(array: np.ndarray | Tensor, device: torch.device) -> Tensor:
    """Return ``array`` as a contiguous tensor on ``device`` (to CUDA: pinned, non-blocking).

    A tensor already there is returned as it is; numpy arrays torch cannot view (read-only,
    flipped, other dtypes) are copied first.
    """
    if isinstance(array, Tensor):
        t = array
    else:
        view = torch_view(array)
        t = view if view is not None else torch.from_numpy(np.array(array, order="C"))
    t = t.contiguous()
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def prepare_slices_on(case: Case, cfg: PreprocessConfig, z: np.ndarray,
                      device: torch.device) -> DeviceSlices:
    """Normalise ``case`` and cut the axial slices ``z`` on ``device``.

    Parameters
    ----------
    case : Case
    cfg : PreprocessConfig
        Must satisfy :func:`supports` (``"percentile"`` normalisation, no histogram reference).
    z : (N,) int array
        Axial slices, each in ``[0, depth)``.
    device : torch.device

    Returns
    -------
    DeviceSlices
        Equal to :func:`~cavlog_core.data.preprocess.prepare_slices` up to float32 rounding.
    """
    if not supports(cfg):
        raise CavlogError(f"normalization={cfg.normalization!r} with histogram_reference="
                          f"{cfg.histogram_reference!r}: only 'percentile' without a reference "
                          "runs on the device")
    z = check_slice_indices(case, z)
    flair = to_device(case.flair.astype(np.float32, copy=False), device)
    brain = to_device(case.brain_mask, device)
    lo, hi = brain_percentiles(flair[brain], cfg.percentiles)
    index = torch.from_numpy(z).to(device)
    flair_s = flair.permute(2, 0, 1)[index]  # (N, X, Y): a gather, so a new tensor
    brain_s = brain.permute(2, 0, 1)[index]
    scale = 1.0 / (hi - lo) if hi > lo else 0.0  # constant brain -> 0 everywhere
    images = flair_s.sub_(lo).mul_(scale).clamp_(0.0, 1.0).mul_(brain_s)
    geometry = SliceGeometry.for_shape(case.brain_mask.shape[:2], cfg.resolution)
    images_r = geometry.to_model(images, order=1).clamp_(0.0, 1.0)
    brain_r = geometry.to_model(brain_s, order=1)
    return DeviceSlices(images=images_r[:, None], brain=brain_r[:, None], brain_slices=brain_s,
                        z=z, geometry=geometry, case_id=case.case_id)
