"""Grad-CAM of a VAE's latent mean: the attention map the paper constrains and uses as anomaly map.

Selvaraju et al., "Grad-CAM", ICCV 2017, applied to VAEs by Liu et al., "Towards visually
explaining variational autoencoders", CVPR 2020; Silva-Rodríguez et al., BMVC 2021, Eq. (2): the
target is Σ_batch Σ_dims μ, the weights are the spatially averaged gradients, and (unlike the
classification Grad-CAM) no ReLU is applied.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .resnet_vae import ResNetVAE, VAEOutput

__all__ = ["AttentionOutput", "attention", "encoder_cam", "grad_cam", "upsample_cam"]


def grad_cam(features: Tensor, mu: Tensor, *, create_graph: bool,
             retain_graph: bool | None = None) -> Tensor:
    """Raw Grad-CAM ``Σ_k α_k A_k`` with ``α_k`` = spatial mean of ∂(Σ_b Σ_j μ_bj)/∂A_k.

    Parameters
    ----------
    features : (B, C, h, w) Tensor
        Activations A of the chosen encoder stage; must be part of the graph that produced ``mu``.
    mu : (B, Z) Tensor
        Latent means computed from ``features``.
    create_graph : bool
        True during training, so a loss on the map back-propagates into the encoder (a
        second-order term); False at inference (the graph of ``mu`` is then freed).
    retain_graph : bool, optional
        Keep the graph for a later backward (default: ``create_graph``); set True to monitor the
        attention without back-propagating through it and still call ``loss.backward()``.

    Returns
    -------
    (B, h, w) Tensor
        Raw map (no ReLU, no sigmoid); at least float32 whatever the autocast dtype.

    Notes
    -----
    The target sums μ over the batch, as the paper. Each image's μ depends only on its own
    activations in evaluation mode; in training mode BatchNorm couples the images of a batch,
    exactly as in the paper's implementation.
    """
    if features.dim() != 4 or mu.dim() != 2 or features.shape[0] != mu.shape[0]:
        raise ValueError(
            f"grad_cam: expected features (B, C, h, w) and mu (B, Z) with the same B, got "
            f"{tuple(features.shape)} and {tuple(mu.shape)}"
        )
    retain = create_graph if retain_graph is None else retain_graph
    (grads,) = torch.autograd.grad(mu.sum(), features, create_graph=create_graph,
                                   retain_graph=retain)
    dtype = torch.promote_types(features.dtype, torch.float32)  # bf16/fp16 -> fp32, fp64 kept
    alpha = grads.to(dtype).mean(dim=(2, 3), keepdim=True)
    return (alpha * features.to(dtype)).sum(dim=1)


def upsample_cam(cam: Tensor, size: int) -> Tensor:
    """``(B, h, w)`` map -> ``(B, 1, size, size)``, bilinear (``align_corners=False``)."""
    return F.interpolate(cam.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)


class AttentionOutput(NamedTuple):
    """Forward pass plus attention, as used by the constrained training step.

    Attributes
    ----------
    vae : VAEOutput
        The model's forward output.
    cam : (B, h, w) Tensor
        Raw Grad-CAM at the model's ``cam_stage``.
    attention : (B, h, w) Tensor
        ``sigmoid(cam)`` in (0, 1): the map a in f_c(a) = (1 - mean(a)) - p.
    """

    vae: VAEOutput
    cam: Tensor
    attention: Tensor


def attention(model: nn.Module, x: Tensor, *, create_graph: bool,
              retain_graph: bool | None = None) -> AttentionOutput:
    """Forward ``(B, 1, R, R)`` images through ``model`` and return its Grad-CAM attention.

    ``model`` is a :class:`ResNetVAE` or a wrapper whose ``forward`` returns a :class:`VAEOutput`
    (e.g. DistributedDataParallel). ``create_graph`` / ``retain_graph`` as in :func:`grad_cam`.
    Grad is enabled locally, so this also works under ``torch.no_grad()``.
    """
    with torch.enable_grad():
        out: VAEOutput = model(x)
        cam = grad_cam(out.features, out.mu, create_graph=create_graph, retain_graph=retain_graph)
    return AttentionOutput(out, cam, torch.sigmoid(cam))


def encoder_cam(model: ResNetVAE, x: Tensor) -> Tensor:
    """Raw Grad-CAM ``(B, h, w)`` of ``(B, 1, R, R)`` images for inference, encoder only.

    Stages up to ``cam_stage`` run without autograd (their gradients are never needed); the
    decoder is skipped. Works in evaluation mode and under ``torch.no_grad()`` or
    ``torch.inference_mode()`` (left locally: a Grad-CAM needs a backward pass).
    """
    with torch.inference_mode(False), torch.no_grad():
        features = model.features_at(x.clone() if x.is_inference() else x)
    with torch.inference_mode(False), torch.enable_grad():
        features = features.detach().requires_grad_(True)
        mu, _ = model.encode_from(features)
        return grad_cam(features, mu, create_graph=False).detach()
