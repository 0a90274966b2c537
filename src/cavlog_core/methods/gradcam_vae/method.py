"""The Grad-CAM VAE: the base of the attention methods (the paper's, CAVGA, Grad-CAM_D).

A ResNet-18 VAE whose anomaly map is the Grad-CAM of Σμ at ``cam_stage`` (Liu et al., "Towards
visually explaining variational autoencoders", CVPR 2020). Its training step optionally adds an
attention penalty selected by :attr:`GradCamVAE.constraint_kind`; here it is ``"none"`` (a plain
VAE whose attention is only monitored), the constrained method of Silva-Rodríguez, Naranjo & Dolz
(BMVC 2021) sets the extended log-barrier.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch
from torch import Tensor, nn

from ...models.gradcam import attention, encoder_cam, upsample_cam
from ...models.losses import size_constraint
from ...models.resnet_vae import ResNetVAE
from ..base import Batch, Logs, Method, step_if_finite, vae_of
from .loss import (
    barrier_active_flag,
    constrained_objective,
    t_at,
    uses_attention_loss,
)

__all__ = ["GradCamVAE", "no_autocast"]


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Leave any enclosing autocast region: backward passes should not run under autocast."""
    if device.type in ("cuda", "cpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


class GradCamVAE(Method):
    """VAE + Grad-CAM attention; the attention penalty is chosen by ``constraint_kind``.

    Training step (``TrainConfig``): L = recon + β·KL + λ·penalty(a) with a = σ(Grad-CAM at
    ``cam_stage``), computed with ``create_graph=True`` when a penalty is active so its gradient
    reaches the encoder. The first ``warmup_iterations`` batches use the VAE loss only. This base
    has no penalty (``"none"``: Liu et al.'s Grad-CAM VAE); the attention is still computed,
    detached, to log f_c(a) = (1 - mean(a)) - p for comparison. Subclasses fix another kind
    (CAVGA: ``"pixel-l1"``) or read it from ``TrainConfig.constraint`` (the paper's method).

    Anomaly map: the raw Grad-CAM (no sigmoid) at the same stage, bilinearly up-sampled to the
    input size, passed through :meth:`map_from_cam`; normalisation happens in
    :mod:`cavlog_core.inference`.

    ``config.model.cam_weights`` selects how the CAM is formed, the same way in training
    (a = σ(cam)) and at inference (raw cam): ``"gradient"`` (the paper's Grad-CAM),
    ``"gradient-frozen-bn"`` (Grad-CAM with the BatchNorm statistics after the CAM stage held
    constant, so the per-image weights do not cancel across the batch in training mode) or
    ``"mean"`` (channel mean of the activations, as the authors' released code); see
    :mod:`cavlog_core.models.gradcam`.
    """

    name: ClassVar[str] = "gradcam-vae"
    description: ClassVar[str] = (
        "Grad-CAM VAE: plain VAE, map = Grad-CAM of the latent mean at the CAM stage, no "
        "constraint (Liu et al. 2020)"
    )
    #: Fixed penalty kind, or None to use ``config.train.constraint``.
    constraint_kind: ClassVar[str | None] = "none"

    @property
    def kind(self) -> str:
        """The attention penalty (``TrainConfig.constraint``)."""
        return self.constraint_kind or self.config.train.constraint

    @property
    def cam_weights(self) -> str:
        """``config.model.cam_weights``: how the CAM is formed, in training and at inference."""
        return self.config.model.cam_weights

    def build(self) -> nn.ModuleDict:
        """Build the ResNet-18 VAE of ``config.model``."""
        return nn.ModuleDict({"model": ResNetVAE.from_config(self.config.model)})

    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> Logs:
        """One Adam step on a batch; see the class docstring for the loss.

        Returns 0-d tensors on the batch's device: ``loss``, ``recon``, ``kl``, ``constraint``
        (the λ-weighted penalty, 0 in warm-up), ``mean_fc`` (batch mean of f_c),
        ``mean_attention`` (batch mean of a), ``violated`` (share of images with f_c > 0),
        ``barrier_active`` (1.0 when some image has f_c > -1/t² for the barrier, f_c > 0
        otherwise; see :func:`~cavlog_core.methods.gradcam_vae.loss.barrier_active`), and ``t``
        (a float).
        When the loss is not finite no optimiser step is taken (the caller stops training).
        """
        train = self.config.train
        x = batch.images
        model = modules["model"]
        opt = optimizers["model"]
        kind = self.kind
        with_graph = uses_attention_loss(train, iteration, kind)
        t = t_at(train, iteration)

        opt.zero_grad(set_to_none=True)
        # Without the penalty the attention is only monitored, but the graph must survive for
        # the VAE backward.
        att = attention(model, x, create_graph=with_graph, retain_graph=True,
                        weights=self.cam_weights)
        terms = constrained_objective(att, x, train=train, iteration=iteration, kind=kind)
        with no_autocast(x.device):
            terms.total.backward()
        step_if_finite(opt, terms.total)
        fc = terms.fc.detach().float()
        return {
            "loss": terms.total.detach(), "recon": terms.recon.detach(),
            "kl": terms.kl.detach(), "constraint": terms.penalty.detach(),
            "mean_fc": fc.mean(), "mean_attention": att.attention.detach().float().mean(),
            "violated": (fc > 0).float().mean(),
            "barrier_active": barrier_active_flag(fc, kind=kind, t=t), "t": t,
        }

    def map_from_cam(self, cam: Tensor) -> Tensor:
        """Anomaly score from the raw up-sampled Grad-CAM (identity: high attention = anomaly)."""
        return cam

    def raw_maps_and_fc(self, modules: nn.ModuleDict, images: Tensor,
                        brain: Tensor) -> tuple[Tensor, Tensor | None]:
        """:meth:`anomaly_maps` and the ``(B,)`` constraint values f_c(σ(cam)) from one pass.

        Used by :func:`~cavlog_core.training.fit` after training to report the share of healthy
        slices with f_c(a) <= 0 (evaluation mode) next to the healthy thresholds.
        """
        model = vae_of(modules)
        cam = encoder_cam(model, images, weights=self.cam_weights)
        fc = size_constraint(torch.sigmoid(cam), self.config.train.p)
        if type(self).anomaly_maps is not GradCamVAE.anomaly_maps:
            # A subclass with its own map (e.g. Grad-CAM_D): use it, keep the shared f_c.
            return self.anomaly_maps(modules, images, brain), fc
        return self.map_from_cam(upsample_cam(cam, images.shape[-1])), fc

    def anomaly_maps(self, modules: nn.ModuleDict, images: Tensor, brain: Tensor) -> Tensor:
        """Raw Grad-CAM at ``cam_stage``, bilinearly up-sampled to ``(B, 1, R, R)``.

        Uses the modules' current mode (call ``modules.eval()`` first for inference); gradients
        w.r.t. the activations are computed internally even under ``torch.no_grad()``. ``brain``
        is unused: maps are normalised inside the brain by :mod:`cavlog_core.inference`.
        """
        model = vae_of(modules)
        cam = encoder_cam(model, images, weights=self.cam_weights)
        return self.map_from_cam(upsample_cam(cam, images.shape[-1]))
