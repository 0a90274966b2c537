"""Reconstruction-residual baselines: the AE and the VAE, base of the residual family.

All share the paper's ResNet-18 VAE (:class:`cavlog_core.models.ResNetVAE`) and differ only in the
training input, the latent code and how many reconstructions are averaged; the anomaly map is the
absolute residual |x − x̂| inside a slightly eroded brain mask (x̂ = sigmoid(logits)). Following
Baur, Denner, Wiestler, Navab & Albarqouni, "Autoencoders for unsupervised anomaly segmentation in
brain MR images: a comparative study", Medical Image Analysis 2021, as benchmarked by
Silva-Rodríguez et al., BMVC 2021, Table 1.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from ...maps.normalize import erode_masks
from ...models.losses import vae_loss
from ...models.resnet_vae import ResNetVAE, VAEOutput
from ..base import Batch, Logs, Method, step_if_finite, vae_of
from .nets import DeterministicResNetVAE

__all__ = ["AE", "VAE", "ResidualMethod", "residual_map"]


def residual_map(images: Tensor, recon: Tensor, brain: Tensor, *, erosion: int) -> Tensor:
    """|x − x̂| inside the brain mask eroded by ``erosion`` pixels, 0 elsewhere.

    Parameters
    ----------
    images, recon : (B, 1, R, R) Tensor
        Inputs and reconstructions, both in [0, 1].
    brain : (B, 1, R, R) bool Tensor
    erosion : int
        The skull-stripping rim is often badly reconstructed; eroding keeps it out of the map.

    Returns
    -------
    (B, 1, R, R) float32 Tensor
    """
    inner = erode_masks(brain.bool(), erosion)
    return ((images.float() - recon.float()).abs() * inner).detach()


class ResidualMethod(Method):
    """Base of the residual baselines (not registered: it has no ``name``).

    ``variational`` selects the VAE loss and a sampled z, else the deterministic AE (z = μ,
    β = 0). Variants change :meth:`training_input` (Context: blanked patches) or
    :meth:`latent_samples` (Bayesian: several decodings averaged).
    """

    variational: ClassVar[bool] = True

    def network(self, *, dropout: float | None = None) -> ResNetVAE:
        """Build the shared architecture from ``config.model`` (deterministic for the AEs)."""
        cfg = self.config.model
        cls = ResNetVAE if self.variational else DeterministicResNetVAE
        return cls(resolution=cfg.resolution, width=cfg.width, latent_dim=cfg.latent_dim,
                   cam_stage=cfg.cam_stage, dropout=cfg.dropout if dropout is None else dropout)

    def build(self) -> nn.ModuleDict:
        """Build the shared ResNet-18 (V)AE of ``config.model``."""
        return nn.ModuleDict({"model": self.network()})

    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> Logs:
        """One Adam step on recon (+ β·KL for the variational variants).

        Returns 0-d tensors ``loss``, ``recon`` and ``kl`` (KL is reported, but weighted 0, for
        AEs). No step is taken when the loss is not finite.
        """
        train = self.config.train
        x = batch.images
        x_in = self.training_input(batch)
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        out: VAEOutput = modules["model"](x_in)  # train mode: z sampled (VAE) or μ (AE)
        terms = vae_loss(out, x, recon=train.recon, beta=train.beta if self.variational else 0.0)
        terms.total.backward()
        step_if_finite(opt, terms.total)
        return {"loss": terms.total.detach(), "recon": terms.recon.detach(),
                "kl": terms.kl.detach()}

    def training_input(self, batch: Batch) -> Tensor:
        """Return what the network sees in training (the loss compares with ``batch.images``)."""
        return batch.images

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """``(S·B, Z)`` latent codes to decode at inference (S samples per image); default μ."""
        return mu

    @torch.no_grad()
    def reconstruct(self, modules: nn.ModuleDict, images: Tensor) -> Tensor:
        """Mean reconstruction ``(B, 1, R, R)`` in [0, 1] over the :meth:`latent_samples` decodings.

        The encoder runs once; the S latent codes of the batch are decoded as one ``(S·B)`` batch.
        """
        net = vae_of(modules)
        _, mu, logvar = net.encode(images)
        z = self.latent_samples(net, mu, logvar)
        recon = torch.sigmoid(net.decode(z).float())
        return recon.view(-1, *images.shape).mean(dim=0)

    def anomaly_maps(self, modules: nn.ModuleDict, images: Tensor, brain: Tensor) -> Tensor:
        """|x − x̂| inside the brain eroded by ``preprocess.mask_erosion``; ``(B, 1, R, R)``."""
        recon = self.reconstruct(modules, images)
        return residual_map(images, recon, brain, erosion=self.config.preprocess.mask_erosion)


class AE(ResidualMethod):
    """Deterministic auto-encoder: z = μ, reconstruction loss only."""

    name: ClassVar[str] = "ae"
    description: ClassVar[str] = "auto-encoder (z = μ, no KL); map = |x − x̂| in the brain"
    variational: ClassVar[bool] = False


class VAE(ResidualMethod):
    """Variational auto-encoder (Kingma & Welling 2014); x̂ decoded from μ at inference."""

    name: ClassVar[str] = "vae"
    description: ClassVar[str] = "variational auto-encoder; map = |x − x̂(μ)| in the brain"
