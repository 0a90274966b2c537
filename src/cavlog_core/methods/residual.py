"""Reconstruction-residual baselines: AE, VAE, Context AE/VAE and Bayesian AE/VAE.

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
import torch.nn.functional as F
from torch import Tensor, nn

from ..maps.normalize import erode_masks
from ..models.losses import vae_loss
from ..models.resnet_vae import ResNetVAE, VAEOutput
from .base import Batch, Method
from .constrained import unwrap

__all__ = [
    "AE",
    "VAE",
    "BayesianAE",
    "BayesianVAE",
    "ContextAE",
    "ContextVAE",
    "DeterministicResNetVAE",
    "ResidualMethod",
    "blank_patches",
    "residual_map",
]


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


class DeterministicResNetVAE(ResNetVAE):
    """:class:`ResNetVAE` that decodes z = μ in training mode too (the plain auto-encoder).

    Same parameters and state dict as the VAE; only the sampling differs, so training still goes
    through ``forward`` (which DistributedDataParallel needs to synchronise gradients).
    """

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return ``mu``: the auto-encoders are deterministic."""
        return mu


class ResidualMethod(Method):
    """Base of the residual baselines (not registered: it has no ``name``).

    Class attributes select the variant: ``variational`` (VAE loss and sampled z vs deterministic
    AE with z = μ and β = 0), ``context`` (train on inputs with blanked patches, reconstruct the
    full image), ``mc_samples`` (reconstructions averaged at inference).
    """

    variational: ClassVar[bool] = True
    context: ClassVar[bool] = False
    mc_samples: ClassVar[int] = 1

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
    ) -> dict[str, float]:
        """One Adam step on recon (+ β·KL for the variational variants).

        Returns floats ``loss``, ``recon`` and ``kl`` (KL is reported, but weighted 0, for AEs).
        """
        train = self.config.train
        x = batch.images
        x_in = blank_patches(x, batch.brain) if self.context else x
        opt = optimizers["model"]
        opt.zero_grad(set_to_none=True)
        out: VAEOutput = modules["model"](x_in)  # train mode: z sampled (VAE) or μ (AE)
        terms = vae_loss(out, x, recon=train.recon, beta=train.beta if self.variational else 0.0)
        terms.total.backward()
        loss = float(terms.total.detach())
        if loss == loss and abs(loss) != float("inf"):
            opt.step()
        return {"loss": loss, "recon": float(terms.recon.detach()), "kl": float(terms.kl.detach())}

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """``(S·B, Z)`` latent codes to decode at inference (S = ``mc_samples``); default μ."""
        return mu

    @torch.no_grad()
    def reconstruct(self, modules: nn.ModuleDict, images: Tensor) -> Tensor:
        """Mean reconstruction ``(B, 1, R, R)`` in [0, 1] over ``mc_samples`` decodings.

        The encoder runs once; the S latent codes of the batch are decoded as one ``(S·B)`` batch.
        """
        net = unwrap(modules["model"])
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


class ContextAE(AE):
    """AE trained to fill in random square holes blanked inside the brain (Zimmerer et al. 2019)."""

    name: ClassVar[str] = "context-ae"
    description: ClassVar[str] = (
        "context AE: trained to reconstruct images with random square patches blanked in the "
        "brain; map = |x − x̂|"
    )
    context: ClassVar[bool] = True


class ContextVAE(VAE):
    """VAE trained on inputs with blanked patches (Zimmerer et al., context-encoding VAE, 2019)."""

    name: ClassVar[str] = "context-vae"
    description: ClassVar[str] = (
        "context VAE: VAE trained to reconstruct images with random square patches blanked in "
        "the brain; map = |x − x̂|"
    )
    context: ClassVar[bool] = True


#: Latent dropout of the Bayesian AE when ``ModelConfig.dropout`` is 0.
DEFAULT_MC_DROPOUT = 0.2
#: Monte-Carlo samples averaged by the Bayesian baselines.
DEFAULT_MC_SAMPLES = 8


class BayesianAE(AE):
    """AE with dropout on the latent code, kept active at inference (MC dropout, Gal 2016).

    The dropout rate is ``ModelConfig.dropout`` or, when that is 0, :data:`DEFAULT_MC_DROPOUT`.
    Training uses the model's own latent dropout; inference decodes ``mc_samples`` dropped-out
    copies of μ in one batch and averages the reconstructions.
    """

    name: ClassVar[str] = "bayesian-ae"
    description: ClassVar[str] = (
        f"Bayesian AE: MC dropout on the latent, map = |x − mean of {DEFAULT_MC_SAMPLES} "
        "reconstructions|"
    )
    mc_samples: ClassVar[int] = DEFAULT_MC_SAMPLES

    @property
    def dropout(self) -> float:
        """Dropout rate on the latent code (Monte Carlo samples at inference)."""
        return self.config.model.dropout or DEFAULT_MC_DROPOUT

    def build(self) -> nn.ModuleDict:
        """Build the shared ResNet-18 (V)AE of ``config.model``."""
        return nn.ModuleDict({"model": self.network(dropout=self.dropout)})

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return the latent codes decoded at inference (one or several samples)."""
        # Explicit dropout: the model's own Dropout module is inactive in evaluation mode.
        z = mu.repeat(self.mc_samples, 1)
        return F.dropout(z, self.dropout, training=True)


class BayesianVAE(VAE):
    """VAE whose map averages ``mc_samples`` reconstructions from z ~ N(μ, σ²)."""

    name: ClassVar[str] = "bayesian-vae"
    description: ClassVar[str] = (
        f"Bayesian VAE: map = |x − mean of {DEFAULT_MC_SAMPLES} reconstructions from sampled z|"
    )
    mc_samples: ClassVar[int] = DEFAULT_MC_SAMPLES

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return the latent codes decoded at inference (one or several samples)."""
        mu_s, logvar_s = mu.repeat(self.mc_samples, 1), logvar.repeat(self.mc_samples, 1)
        return mu_s + torch.randn_like(mu_s) * torch.exp(0.5 * logvar_s)
