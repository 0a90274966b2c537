"""Attention maps of a VAE's CAM stage: the map the paper constrains and uses as anomaly map.

Selvaraju et al., "Grad-CAM", ICCV 2017, applied to VAEs by Liu et al., "Towards visually
explaining variational autoencoders", CVPR 2020; Silva-Rodríguez et al., BMVC 2021, Eq. (2): the
target is Σ_batch Σ_dims μ, the weights are the spatially averaged gradients, and (unlike the
classification Grad-CAM) no ReLU is applied.

Three ways of weighting the CAM-stage activations A (``ModelConfig.cam_weights``):

``"gradient"``
    The paper as written: α_k = spatial mean of ∂(Σ μ)/∂A_k, through the network in its
    current mode. In training mode every path out of layer1 starts with a BatchNorm that uses
    batch statistics, and the gradient through such a BatchNorm has zero mean over
    batch × pixels per channel, so Σ_b α_bk ≈ 0: the per-image weights nearly cancel across the
    batch and σ(cam) cannot exceed 0.5 on most healthy images (measured on 224² / width 1:
    |Σ_b α| / Σ_b |α| ≈ 0.03 in training mode vs 0.65-0.88 in evaluation mode).
``"gradient-running-bn"``
    Grad-CAM whose pass through the BatchNorms *after* the CAM stage normalises with their
    running statistics (:func:`running_statistics`), with gradients, also in training mode. That
    is the very function the map is computed with at inference (evaluation mode), so what the
    size constraint trains is what the user is shown; with batch statistics (``"gradient"``),
    the constraint can be met through the batch coupling alone (Σ_b α_bk reduces to the
    zero-padding border term of the next convolution) and then fails in evaluation mode.
    Running statistics are neither updated nor differentiated by this pass; the VAE loss sees the
    ordinary training-mode forward. Identical to ``"gradient"`` in evaluation mode.
``"gradient-frozen-bn"``
    Grad-CAM in which the BatchNorms *after* the CAM stage normalise with the current batch's
    mean and variance held constant (:func:`frozen_batch_statistics`): the forward values are
    unchanged, but α_b becomes the derivative of image b's own μ_b, as in evaluation mode, so the
    cancellation disappears. The VAE loss still sees the ordinary training-mode forward; only the
    CAM's gradient (and its second-order graph) uses the held statistics. Identical to
    ``"gradient"`` in evaluation mode.
``"mean"``
    Channel mean of A, without gradients: the authors' released code
    (jusiro/constrained_anomaly_segmentation, ``trainers/gradCAMCons.py``) computes the gradients
    but builds its map as ``mean_k A_k``. A constraint on this map only trains the encoder up to
    the CAM stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import CAM_WEIGHTS
from .resnet_vae import ResNetVAE, VAEOutput

__all__ = [
    "CAM_WEIGHTS",
    "AttentionOutput",
    "activation_cam",
    "attention",
    "compute_cam",
    "encoder_cam",
    "frozen_batch_statistics",
    "grad_cam",
    "running_statistics",
    "unwrap",
    "upsample_cam",
]



def _check_weights(weights: str) -> None:
    if weights not in CAM_WEIGHTS:
        raise ValueError(f"cam weights {weights!r}: expected one of {', '.join(CAM_WEIGHTS)}")


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
    exactly as in the paper's implementation (see ``"gradient-frozen-bn"`` in the module
    docstring for the consequence and the alternative).
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
    alpha = grads.mean(dim=(2, 3), dtype=dtype)  # (B, C); accumulates in dtype, no copy
    b, c, h, w = features.shape
    # Σ_k α_k A_k as a batched (h·w, C) @ (C, 1) product: ~3x faster than multiply-then-sum on
    # the CPU, and the permute is free for channels-last activations. Autocast is held off so the
    # product stays in ``dtype`` (it would otherwise run in bf16).
    with torch.autocast(features.device.type, enabled=False):
        pixels = features.permute(0, 2, 3, 1).reshape(b, h * w, c).to(dtype)
        return torch.bmm(pixels, alpha.unsqueeze(-1)).view(b, h, w)


def activation_cam(features: Tensor) -> Tensor:
    """Channel mean ``mean_k A_k`` of ``(B, C, h, w)`` activations -> ``(B, h, w)``, >= float32.

    The map of the authors' released code (``cam_weights="mean"``); differentiable w.r.t. A.
    """
    if features.dim() != 4:
        raise ValueError(f"activation_cam: expected (B, C, h, w) features, got "
                         f"{tuple(features.shape)}")
    dtype = torch.promote_types(features.dtype, torch.float32)
    return features.to(dtype).mean(dim=1)


def _uses_batch_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    # The rule of nn.BatchNorm*d.forward: batch statistics in training mode or without buffers.
    return bn.training or bn.running_mean is None or bn.running_var is None


def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _held_stats_forward(bn: nn.modules.batchnorm._BatchNorm):
    def forward(x: Tensor) -> Tensor:
        dims = [0, *range(2, x.dim())]
        xd = x.detach().to(torch.promote_types(x.dtype, torch.float32))
        mean = xd.mean(dim=dims)
        var = xd.var(dim=dims, unbiased=False)  # BatchNorm normalises with the biased variance
        # training=False: normalise with the given (constant) statistics, update no buffers.
        return F.batch_norm(x, mean, var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return forward


@contextlib.contextmanager
def frozen_batch_statistics(module: nn.Module) -> Iterator[None]:
    """Hold BatchNorm batch statistics constant inside the ``with`` block.

    Every BatchNorm of ``module`` that would normalise with batch statistics (training mode)
    instead computes the current batch's per-channel mean and biased variance, detaches them and
    normalises with those constants: the output values are the same, but no gradient flows
    through the statistics (so ∂y_b/∂x_b' = 0 for b ≠ b') and the running statistics are not
    updated. BatchNorms in evaluation mode are left alone. Not thread-safe (it sets an instance
    ``forward`` on the affected modules and removes it on exit).
    """
    with _patched_forwards([bn for bn in _batch_norms(module) if _uses_batch_stats(bn)],
                           _held_stats_forward):
        yield


@contextlib.contextmanager
def _patched_forwards(bns: list, make_forward) -> Iterator[None]:
    """Give each of ``bns`` the instance ``forward`` ``make_forward(bn)``; remove it on exit."""
    try:
        for bn in bns:
            bn.forward = make_forward(bn)
        yield
    finally:
        for bn in bns:
            bn.__dict__.pop("forward", None)


def _running_stats_forward(bn: nn.modules.batchnorm._BatchNorm):
    def forward(x: Tensor) -> Tensor:
        # training=False: normalise with the running buffers (as in evaluation mode), no update.
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0,
                            bn.eps)
    return forward


@contextlib.contextmanager
def running_statistics(module: nn.Module) -> Iterator[None]:
    """Normalise every training-mode BatchNorm of ``module`` with its running statistics.

    Inside the ``with`` block each BatchNorm that would use batch statistics (training mode, with
    running buffers) computes ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``:
    the function evaluation mode applies. Gradients flow to ``x``, ``weight`` and ``bias``; the
    buffers are constants and are not updated. BatchNorms without buffers or in evaluation mode
    are left alone. Not thread-safe (instance ``forward`` attributes, removed on exit).
    """
    patched = [bn for bn in _batch_norms(module)
               if bn.training and bn.running_mean is not None and bn.running_var is not None]
    with _patched_forwards(patched, _running_stats_forward):
        yield


_HELD = {"gradient-frozen-bn": frozen_batch_statistics, "gradient-running-bn": running_statistics}


def unwrap(model: nn.Module) -> nn.Module:
    """Return the bare module inside a DistributedDataParallel (or similar ``.module``) wrapper."""
    return getattr(model, "module", model)


def _after_cam_stage(net: nn.Module) -> nn.Module:
    stages = getattr(net, "stages", None)
    if stages is None or not hasattr(net, "cam_stage"):
        return net
    return stages[net.cam_stage:]


def compute_cam(model: nn.Module, features: Tensor, mu: Tensor, *, weights: str = "gradient",
                create_graph: bool, retain_graph: bool | None = None) -> Tensor:
    """Raw ``(B, h, w)`` CAM of ``features`` by the ``weights`` rule of the module docstring.

    Parameters
    ----------
    model : ResNetVAE or a wrapper with ``.module``
        The network that produced ``features`` and ``mu``; used by ``"gradient-running-bn"`` and
        ``"gradient-frozen-bn"`` to re-run the encoder after the CAM stage
        (:meth:`ResNetVAE.encode_from`) with running or held BatchNorm statistics. That second
        pass costs about one extra forward of layers 2-4 and is skipped when no BatchNorm there
        uses batch statistics (evaluation mode), where the result equals ``"gradient"``.
    features : (B, C, h, w) Tensor
        CAM-stage activations, in the graph of ``mu``.
    mu : (B, Z) Tensor
        Latent means from ``features``.
    weights : {"gradient", "gradient-running-bn", "gradient-frozen-bn", "mean"}
    create_graph, retain_graph : bool
        As in :func:`grad_cam` (``retain_graph`` refers to the graph of ``mu``; the private graph
        of the held-statistics pass is kept exactly when ``create_graph``). Ignored by ``"mean"``.

    Returns
    -------
    (B, h, w) Tensor
        Raw map, at least float32.
    """
    _check_weights(weights)
    if weights == "mean":
        return activation_cam(features)
    if weights in _HELD:
        # ``model`` is a ResNetVAE or a wrapper of one (see Parameters).
        net = cast(ResNetVAE, unwrap(model))
        if any(_uses_batch_stats(bn) for bn in _batch_norms(_after_cam_stage(net))):
            with _HELD[weights](_after_cam_stage(net)):
                held_mu, _ = net.encode_from(features)
            return grad_cam(features, held_mu, create_graph=create_graph,
                            retain_graph=create_graph)
    return grad_cam(features, mu, create_graph=create_graph, retain_graph=retain_graph)


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
        Raw CAM at the model's ``cam_stage`` (Grad-CAM unless ``weights="mean"``).
    attention : (B, h, w) Tensor
        ``sigmoid(cam)`` in (0, 1): the map a in f_c(a) = (1 - mean(a)) - p.
    """

    vae: VAEOutput
    cam: Tensor
    attention: Tensor


def attention(model: nn.Module, x: Tensor, *, create_graph: bool,
              retain_graph: bool | None = None, weights: str = "gradient") -> AttentionOutput:
    """Forward ``(B, 1, R, R)`` images through ``model`` and return its attention.

    ``model`` is a :class:`ResNetVAE` or a wrapper whose ``forward`` returns a :class:`VAEOutput`
    (e.g. DistributedDataParallel). ``create_graph`` / ``retain_graph`` as in :func:`grad_cam`;
    ``weights`` as in :func:`compute_cam`. Grad is enabled locally, so this also works under
    ``torch.no_grad()``.
    """
    _check_weights(weights)
    with torch.enable_grad():
        out: VAEOutput = model(x)
        cam = compute_cam(model, out.features, out.mu, weights=weights,
                          create_graph=create_graph, retain_graph=retain_graph)
    return AttentionOutput(out, cam, torch.sigmoid(cam))


def encoder_cam(model: ResNetVAE, x: Tensor, *, weights: str = "gradient") -> Tensor:
    """Raw CAM ``(B, h, w)`` of ``(B, 1, R, R)`` images for inference, encoder only.

    Stages up to ``cam_stage`` run without autograd (their gradients are never needed); the
    decoder is skipped, and so is the rest of the encoder for ``weights="mean"``. Works in
    evaluation mode and under ``torch.no_grad()`` or ``torch.inference_mode()`` (left locally:
    a Grad-CAM needs a backward pass). ``weights`` as in :func:`compute_cam`.
    """
    _check_weights(weights)
    model = cast(ResNetVAE, unwrap(model))  # the bare ResNetVAE inside a possible wrapper
    with torch.inference_mode(False), torch.no_grad():
        features = model.features_at(x.clone() if x.is_inference() else x)
        if weights == "mean":
            return activation_cam(features)
    held = _HELD[weights](_after_cam_stage(model)) if weights in _HELD \
        else contextlib.nullcontext()
    with torch.inference_mode(False), torch.enable_grad(), held:
        features = features.detach().requires_grad_(True)
        mu, _ = model.encode_from(features)
        return grad_cam(features, mu, create_graph=False).detach()
