"""VAE and attention-constraint losses of the paper and its ablations.

Silva-Rodríguez, Naranjo & Dolz, BMVC 2021, Eq. (1) (VAE: reconstruction + β·KL), Eq. (3)
(size constraint f_c(a) = (1 - mean(a)) - p <= 0 on healthy images) and Sec. 5 (ablations:
image-level L2 penalty, pixel-level L1 expansion loss of CAVGA, reconstruction loss BCE/L2/SSIM).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import CONSTRAINTS, RECONS
from .barrier import extended_log_barrier
from .resnet_vae import VAEOutput

__all__ = [
    "VAELoss",
    "constraint_penalty",
    "kl_divergence",
    "reconstruction_loss",
    "size_constraint",
    "ssim",
    "vae_loss",
]



def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(x: Tensor, y: Tensor, *, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> Tensor:
    """Per-image mean structural similarity (Wang et al. 2004) of ``(B, 1, H, W)`` images.

    Gaussian window (separable, ``window`` taps, ``sigma``), constants K1 = 0.01, K2 = 0.03,
    zero padding at the borders. Returns a ``(B,)`` Tensor (1 for identical images).
    """
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"ssim: expected two (B, 1, H, W) tensors, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    g = _gaussian_window(window, sigma, x.device).to(x.dtype)
    gx, gy = g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)
    pad = window // 2

    # All five local statistics in one batched separable filtering pass.
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    b = stack.shape[0]
    flat = stack.reshape(b * 5, 1, *stack.shape[2:])
    blurred = F.conv2d(F.conv2d(flat, gx, padding=(0, pad)), gy, padding=(pad, 0))
    mx, my, mxx, myy, mxy = blurred.reshape(b, 5, *stack.shape[2:]).unbind(1)
    vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(dim=1)


def reconstruction_loss(logits: Tensor, x: Tensor, kind: str = "bce") -> Tensor:
    """Scalar reconstruction loss of ``(B, 1, R, R)`` logits against images in [0, 1].

    ``"bce"``: binary cross-entropy with logits, mean per pixel (the paper); ``"l2"``: mean squared
    error of ``sigmoid(logits)``; ``"ssim"``: 1 - mean SSIM of ``sigmoid(logits)``.
    """
    logits = logits.float()
    x = x.float()
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(logits, x)
    if kind == "l2":
        return F.mse_loss(torch.sigmoid(logits), x)
    if kind == "ssim":
        return 1.0 - ssim(torch.sigmoid(logits), x).mean()
    raise ValueError(f"reconstruction loss {kind!r}: expected one of {', '.join(RECONS)}")


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) || N(0, I)), mean over batch and latent dimensions (scalar)."""
    mu, logvar = mu.float(), logvar.float()
    return (-0.5 * (1.0 + logvar - mu * mu - torch.exp(logvar))).mean()


class VAELoss(NamedTuple):
    """``total = recon + beta * kl`` and its two terms (scalar Tensors)."""

    total: Tensor
    recon: Tensor
    kl: Tensor


def vae_loss(out: VAEOutput, x: Tensor, *, recon: str = "bce", beta: float = 1.0) -> VAELoss:
    """Return the VAE objective (the paper's Eq. 1) of a forward output and its input.

    With ``beta = 0`` it is a plain auto-encoder loss (the AE baselines).
    """
    rec = reconstruction_loss(out.logits, x, recon)
    kl = kl_divergence(out.mu, out.logvar)
    return VAELoss(rec + beta * kl, rec, kl)


def size_constraint(attention: Tensor, p: float) -> Tensor:
    """f_c(a) = (1 - mean(a)) - p per image for ``(B, h, w)`` attention in [0, 1]; ``(B,)``.

    f_c <= 0 means at least a share 1 - p of the image is attended (Eq. 3 of the paper).
    """
    return (1.0 - attention.flatten(1).mean(dim=1)) - p


def constraint_penalty(attention: Tensor, *, kind: str, p: float, t: float | Tensor,
                       lam: float) -> tuple[Tensor, Tensor]:
    """λ-weighted attention penalty and the per-image f_c values.

    Parameters
    ----------
    attention : (B, h, w) Tensor
        sigmoid of the Grad-CAM.
    kind : {"barrier", "l2", "pixel-l1", "none"}
        ``barrier``: λ · mean_b ψ_t(f_c) (the paper); ``l2``: λ · mean_b max(0, f_c)²
        (image-level penalty ablation); ``pixel-l1``: λ · mean(1 - a) over all pixels (CAVGA's
        expansion loss); ``none``: 0.
    p, t, lam : float
        Constraint margin, barrier parameter and weight λ.

    Returns
    -------
    (penalty, fc) : (scalar Tensor, (B,) Tensor)
    """
    fc = size_constraint(attention, p)
    if kind == "barrier":
        penalty = extended_log_barrier(fc, t).mean()
    elif kind == "l2":
        penalty = torch.clamp(fc, min=0).pow(2).mean()
    elif kind == "pixel-l1":
        penalty = (1.0 - attention).mean()
    elif kind == "none":
        penalty = fc.new_zeros(())
    else:
        raise ValueError(f"constraint {kind!r}: expected one of {', '.join(CONSTRAINTS)}")
    return lam * penalty, fc
