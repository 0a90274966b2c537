"""FLAIR intensity thresholding: the training-free baseline of Meissen et al. (2021).

Meissen, Kaissis & Rueckert, "Challenging current semi-supervised anomaly segmentation methods for
brain MRI", MICCAI BrainLes 2021: the histogram-equalised FLAIR intensity inside the brain is used
directly as the anomaly score. Glioma oedema is hyperintense in FLAIR, so this is a strong bar on
BraTS that any learned method should clear.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ..base import Batch, Logs, Method

__all__ = ["FlairThreshold", "equalize_in_mask"]


def equalize_in_mask(images: Tensor, mask: Tensor) -> Tensor:
    """Histogram equalisation inside a mask: each pixel becomes its empirical CDF value.

    For image ``b`` with ``n_b`` mask pixels, a mask pixel of value ``v`` maps to
    ``#{mask pixels of b with value <= v} / n_b`` (ties share the same, largest, rank), so the
    brightest pixel maps to 1 and the output is invariant to any increasing intensity transform.
    Pixels outside the mask are 0; an image with an empty mask is all 0.

    Parameters
    ----------
    images : (B, ...) Tensor
        Any per-sample shape, e.g. ``(B, 1, R, R)`` slices or ``(1, X, Y, Z)`` for a whole volume.
    mask : (B, ...) bool Tensor
        Same shape as ``images``.

    Returns
    -------
    (B, ...) float32 Tensor in [0, 1]
    """
    if images.shape != mask.shape:
        raise ValueError(f"images shape {tuple(images.shape)} != mask shape {tuple(mask.shape)}")
    flat = images.reshape(images.shape[0], -1).float()
    inside = mask.reshape(mask.shape[0], -1).bool()
    # Non-mask pixels sort after every real value, so searchsorted counts mask pixels only.
    keyed = flat.masked_fill(~inside, float("inf"))
    ordered, _ = torch.sort(keyed, dim=1)
    counts = torch.searchsorted(ordered, keyed.contiguous(), right=True).float()
    n = inside.sum(dim=1, keepdim=True).clamp(min=1).float()
    cdf = torch.where(inside, counts / n, torch.zeros_like(counts))
    return cdf.reshape(images.shape)


class FlairThreshold(Method):
    """Histogram-equalised FLAIR inside the brain as the anomaly map (no training).

    The map of each slice is :func:`equalize_in_mask` of the normalised FLAIR inside the brain
    mask. Thresholding it (fixed, healthy-percentile or the oracle operating point) happens in
    :mod:`cavlog_core.inference`, exactly as for the learned methods.
    """

    name: ClassVar[str] = "flair-threshold"
    description: ClassVar[str] = (
        "FLAIR intensity baseline: histogram-equalised FLAIR inside the brain (Meissen et al. "
        "2021); no training"
    )
    trainable: ClassVar[bool] = False

    def build(self) -> nn.ModuleDict:
        """Build nothing: FLAIR thresholding has no trainable module."""
        # Nothing to learn; an empty module keeps checkpoints and device moves uniform.
        return nn.ModuleDict({"model": nn.Identity()})

    def optimizers(self, modules: nn.ModuleDict) -> dict[str, torch.optim.Optimizer]:
        """Return no optimiser (nothing to train)."""
        return {}

    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> Logs:
        """Never called: the method is not trainable."""
        return {"loss": 0.0}

    def anomaly_maps(self, modules: nn.ModuleDict, images: Tensor, brain: Tensor) -> Tensor:
        """``(B, 1, R, R)`` per-slice histogram-equalised FLAIR inside ``brain``, 0 outside."""
        return equalize_in_mask(images, brain.bool())
