"""The deterministic variant of the shared ResNet-18 VAE used by the auto-encoder baselines."""

from __future__ import annotations

from torch import Tensor

from ...models.resnet_vae import ResNetVAE

__all__ = ["DeterministicResNetVAE"]


class DeterministicResNetVAE(ResNetVAE):
    """:class:`ResNetVAE` that decodes z = μ in training mode too (the plain auto-encoder).

    Same parameters and state dict as the VAE; only the sampling differs, so training still goes
    through ``forward`` (which DistributedDataParallel needs to synchronise gradients).
    """

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """Return ``mu``: the auto-encoders are deterministic."""
        return mu
