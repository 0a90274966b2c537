"""Context AE / VAE: trained to fill in square holes blanked inside the brain.

Zimmerer, Kohl, Petersen, Isensee & Maier-Hein, "Context-encoding variational autoencoder for
unsupervised anomaly detection", MIDL 2019 (as benchmarked by Baur et al., MedIA 2021).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..base import Batch, MethodOptions
from .method import AE, VAE, ResidualMethod

__all__ = ["ContextAE", "ContextOptions", "ContextVAE", "blank_patches"]


def blank_patches(images: Tensor, brain: Tensor, *, patches: int = 2,
                  size_range: tuple[float, float] = (1 / 8, 1 / 4)) -> Tensor:
    """Set random square patches centred inside the brain to 0 (Context AE/VAE input corruption).

    Each image gets ``patches`` squares whose side is drawn uniformly in ``size_range`` × R and
    whose centre is a uniformly drawn brain pixel (any pixel when the mask is empty). Fully
    vectorised; uses the global torch RNG (seeded by :func:`cavlog_core.training.fit`).

    Parameters
    ----------
    images : (B, 1, R, R) Tensor
    brain : (B, 1, R, R) bool Tensor

    Returns
    -------
    (B, 1, R, R) Tensor
        A corrupted copy; ``images`` is not modified.
    """
    b, _, h, w = images.shape
    dev = images.device
    weights = brain.reshape(b, h * w).float() + 1e-12  # epsilon: empty masks draw uniformly
    centre = torch.multinomial(weights, patches, replacement=True)  # (B, P) flat indices
    cy, cx = (centre // w).float(), (centre % w).float()
    lo, hi = size_range
    half = (lo + torch.rand(b, patches, device=dev) * (hi - lo)) * min(h, w) / 2
    ys = torch.arange(h, device=dev, dtype=torch.float32).view(1, 1, h, 1)
    xs = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, 1, w)
    inside = ((ys - cy[..., None, None]).abs() < half[..., None, None]) & (
        (xs - cx[..., None, None]).abs() < half[..., None, None]
    )  # (B, P, H, W)
    hole = inside.any(dim=1, keepdim=True)
    return images.masked_fill(hole, 0.0)


@dataclass(frozen=True)
class ContextOptions(MethodOptions):
    """Input corruption of the context baselines.

    Attributes
    ----------
    patches : int
        Squares blanked per training image.
    min_size, max_size : float
        Range of the squares' side as a fraction of the image side.
    """

    patches: int = 2
    min_size: float = 1 / 8
    max_size: float = 1 / 4

    def __post_init__(self) -> None:
        if self.patches < 1:
            raise ValueError(f"patches={self.patches}: must be >= 1")
        if not 0 < self.min_size <= self.max_size <= 1:
            raise ValueError(f"min_size={self.min_size}, max_size={self.max_size}: need "
                             "0 < min_size <= max_size <= 1")


class _ContextInput(ResidualMethod):
    """Trains on a copy of the batch with :func:`blank_patches` applied."""

    Options = ContextOptions
    options: ContextOptions

    def training_input(self, batch: Batch) -> Tensor:
        """Return the batch with ``patches`` random squares blanked inside the brain."""
        opt = self.options
        return blank_patches(batch.images, batch.brain, patches=opt.patches,
                             size_range=(opt.min_size, opt.max_size))


class ContextAE(_ContextInput, AE):
    """AE trained to fill in random square holes blanked inside the brain (Zimmerer et al. 2019)."""

    name: ClassVar[str] = "context-ae"
    description: ClassVar[str] = (
        "context AE: trained to reconstruct images with random square patches blanked in the "
        "brain; map = |x − x̂|"
    )


class ContextVAE(_ContextInput, VAE):
    """VAE trained on inputs with blanked patches (Zimmerer et al., context-encoding VAE, 2019)."""

    name: ClassVar[str] = "context-vae"
    description: ClassVar[str] = (
        "context VAE: VAE trained to reconstruct images with random square patches blanked in "
        "the brain; map = |x − x̂|"
    )
