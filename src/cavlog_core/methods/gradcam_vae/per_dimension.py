"""Grad-CAM_D: the Grad-CAM VAE with one Grad-CAM per latent dimension.

Grad-CAM_D computes one Grad-CAM per latent dimension and combines them, as in Silva-Rodríguez
et al., BMVC 2021, Table 1 (after Liu et al., CVPR 2020).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ...models.gradcam import upsample_cam
from ...models.resnet_vae import ResNetVAE
from ..base import vae_of
from .method import GradCamVAE

__all__ = ["GradCamVAED", "per_dimension_cams"]

#: Upper bound on the elements of the batched gradient (dims x B x C x h x w) held at once.
_MAX_GRAD_ELEMENTS = 2**26


def per_dimension_cams(net: ResNetVAE, images: Tensor) -> Tensor:
    """One raw Grad-CAM per latent dimension, ``(Z, B, h, w)``, at the model's ``cam_stage``.

    For dimension j, α_jk = spatial mean of ∂(Σ_b μ_bj)/∂A_k and cam_j = Σ_k α_jk A_k. The Z
    backward passes are vectorised with ``torch.autograd.grad(..., is_grads_batched=True)`` (vmap
    over one-hot output gradients), in chunks of dimensions so that at most
    ``_MAX_GRAD_ELEMENTS`` gradient values are alive (falling back to one backward pass per
    dimension where vmap is unsupported). Encoder only; works under ``no_grad``.
    """
    with torch.no_grad():
        features = net.features_at(images)
    b, c, h, w = features.shape
    with torch.enable_grad():
        features = features.detach().requires_grad_(True)
        mu, _ = net.encode_from(features)
        z = mu.shape[1]
        chunk = max(1, min(z, _MAX_GRAD_ELEMENTS // max(1, b * c * h * w)))
        eye = torch.eye(z, device=mu.device, dtype=mu.dtype)
        cams = []
        for start in range(0, z, chunk):
            onehot = eye[start:start + chunk, None, :].expand(-1, b, z)  # (K, B, Z)
            try:
                (grads,) = torch.autograd.grad(mu, features, grad_outputs=onehot,
                                               retain_graph=True, is_grads_batched=True)
            except RuntimeError:  # an op without a vmap rule on this backend: one pass per dim
                grads = torch.stack([torch.autograd.grad(mu, features, grad_outputs=g,
                                                         retain_graph=True)[0] for g in onehot])
            alpha = grads.float().mean(dim=(3, 4), keepdim=True)  # (K, B, C, 1, 1)
            cams.append((alpha * features.detach().float().unsqueeze(0)).sum(dim=2))
    return torch.cat(cams, dim=0)


class GradCamVAED(GradCamVAE):
    """Grad-CAM_D: plain VAE; map = mean over latent dimensions of ReLU(per-dimension Grad-CAM).

    Each dimension's CAM is rectified before averaging, so dimensions whose gradients point in
    opposite directions do not cancel (they do in the Σμ Grad-CAM).
    """

    name: ClassVar[str] = "gradcam-vae-d"
    description: ClassVar[str] = (
        "Grad-CAM_D: plain VAE, map = mean over latent dimensions of ReLU'd per-dimension "
        "Grad-CAMs"
    )

    def anomaly_maps(self, modules: nn.ModuleDict, images: Tensor, brain: Tensor) -> Tensor:
        """Mean of ReLU'd per-dimension CAMs, bilinearly up-sampled; ``(B, 1, R, R)``."""
        cams = per_dimension_cams(vae_of(modules), images)
        return upsample_cam(cams.clamp(min=0).mean(dim=0), images.shape[-1])
