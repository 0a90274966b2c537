"""Bayesian AE / VAE: the map averages several reconstructions (MC dropout or sampled z).

Gal & Ghahramani, "Dropout as a Bayesian approximation", ICML 2016, as applied to brain MRI by
Baur et al., MedIA 2021.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...models.resnet_vae import ResNetVAE
from ..base import MethodOptions
from .method import AE, VAE

__all__ = ["BayesianAE", "BayesianAEOptions", "BayesianOptions", "BayesianVAE"]


@dataclass(frozen=True)
class BayesianOptions(MethodOptions):
    """Monte-Carlo settings of the Bayesian baselines.

    Attributes
    ----------
    mc_samples : int
        Reconstructions averaged at inference.
    """

    mc_samples: int = 8

    def __post_init__(self) -> None:
        if self.mc_samples < 1:
            raise ValueError(f"mc_samples={self.mc_samples}: must be >= 1")


@dataclass(frozen=True)
class BayesianAEOptions(BayesianOptions):
    """Monte-Carlo settings of the Bayesian AE.

    Attributes
    ----------
    mc_dropout : float
        Latent dropout when ``ModelConfig.dropout`` is 0.
    """

    mc_dropout: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.mc_dropout < 1:
            raise ValueError(f"mc_dropout={self.mc_dropout}: must be in (0, 1)")


_DEFAULT = BayesianOptions()


class BayesianAE(AE):
    """AE with dropout on the latent code, kept active at inference (MC dropout, Gal 2016).

    The dropout rate is ``ModelConfig.dropout`` or, when that is 0, ``mc_dropout``. Training uses
    the model's own latent dropout; inference decodes ``mc_samples`` dropped-out copies of μ in
    one batch and averages the reconstructions.
    """

    name: ClassVar[str] = "bayesian-ae"
    description: ClassVar[str] = (
        f"Bayesian AE: MC dropout on the latent, map = |x − mean of {_DEFAULT.mc_samples} "
        "reconstructions|"
    )
    Options = BayesianAEOptions
    options: BayesianAEOptions

    @property
    def dropout(self) -> float:
        """Dropout rate on the latent code (Monte Carlo samples at inference)."""
        return self.config.model.dropout or self.options.mc_dropout

    @property
    def mc_samples(self) -> int:
        """Reconstructions averaged at inference."""
        return self.options.mc_samples

    def build(self) -> nn.ModuleDict:
        """Build the shared ResNet-18 (V)AE of ``config.model``."""
        return nn.ModuleDict({"model": self.network(dropout=self.dropout)})

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return ``mc_samples`` dropped-out copies of μ, ``(S·B, Z)``."""
        # Explicit dropout: the model's own Dropout module is inactive in evaluation mode.
        z = mu.repeat(self.mc_samples, 1)
        return F.dropout(z, self.dropout, training=True)


class BayesianVAE(VAE):
    """VAE whose map averages ``mc_samples`` reconstructions from z ~ N(μ, σ²)."""

    name: ClassVar[str] = "bayesian-vae"
    description: ClassVar[str] = (
        f"Bayesian VAE: map = |x − mean of {_DEFAULT.mc_samples} reconstructions from sampled z|"
    )
    Options = BayesianOptions
    options: BayesianOptions

    @property
    def mc_samples(self) -> int:
        """Reconstructions averaged at inference."""
        return self.options.mc_samples

    def latent_samples(self, net: ResNetVAE, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return ``mc_samples`` codes z ~ N(μ, σ²) per image, ``(S·B, Z)``."""
        mu_s, logvar_s = mu.repeat(self.mc_samples, 1), logvar.repeat(self.mc_samples, 1)
        return mu_s + torch.randn_like(mu_s) * torch.exp(0.5 * logvar_s)
