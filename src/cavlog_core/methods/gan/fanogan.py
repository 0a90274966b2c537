"""f-AnoGAN: a WGAN-GP on healthy slices, then an encoder trained to invert its generator.

Schlegl, Seeböck, Waldstein, Langs & Schmidt-Erfurth, "f-AnoGAN: fast unsupervised anomaly
detection with generative adversarial networks", Medical Image Analysis 54, 2019. Generator =
the ResNetVAE decoder (z ~ N(0, I) -> image), encoder = the ResNetVAE encoder (z = μ), critic = a
DCGAN-style network without batch norm. Training is split by iteration:

1. iterations ``[0, gan_fraction · N)``: WGAN-GP (Gulrajani et al. 2017) — a critic step every
   iteration, a generator step every ``n_critic`` iterations;
2. the rest: "izif" encoder training with generator and critic frozen,
   ``L = ||x − G(E(x))||² + κ · ||f(x) − f(G(E(x)))||²`` (f = critic features, means per element).

The anomaly map is the residual |x − G(E(x))| inside the eroded brain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import CavlogError
from ...models.resnet_vae import ResNetVAE
from ..base import Batch, Logs, MethodOptions, adam, vae_of
from ..residual import ResidualMethod
from .nets import Discriminator

__all__ = ["FAnoGAN", "FAnoGANOptions", "decoder_parameters", "encoder_parameters",
           "gradient_penalty"]


def encoder_parameters(net: ResNetVAE) -> list[nn.Parameter]:
    """Parameters of the encoder half of a :class:`ResNetVAE` (stem, stages, μ and log σ² heads)."""
    parts = (net.stem, net.stages, net.fc_mu, net.fc_logvar)
    return [p for part in parts for p in part.parameters()]


def decoder_parameters(net: ResNetVAE) -> list[nn.Parameter]:
    """Parameters of the decoder half (the generator): latent projection, up-blocks, head."""
    parts = (net.fc_dec, net.up, net.head)
    return [p for part in parts for p in part.parameters()]


def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty mean_b (||∇_x̃ D(x̃)||₂ − 1)² at random interpolates x̃ of ``(B, 1, R, R)``."""
    eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mix).logits.sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


@dataclass(frozen=True)
class FAnoGANOptions(MethodOptions):
    """f-AnoGAN's schedule and loss weights.

    Attributes
    ----------
    gan_fraction : float
        Share of the iterations that train the GAN (phase 1); the rest trains the encoder.
    n_critic : int
        Critic steps per generator step (WGAN-GP).
    gp_weight : float
        Weight of the gradient penalty.
    kappa : float
        Weight of the critic-feature residual in the izif encoder loss.
    """

    gan_fraction: float = 0.6
    n_critic: int = 5
    gp_weight: float = 10.0
    kappa: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.gan_fraction < 1:
            raise ValueError(f"gan_fraction={self.gan_fraction}: must be in (0, 1)")
        if self.n_critic < 1:
            raise ValueError(f"n_critic={self.n_critic}: must be >= 1")
        if self.gp_weight < 0 or self.kappa < 0:
            raise ValueError(f"gp_weight={self.gp_weight}, kappa={self.kappa}: must be >= 0")


class FAnoGAN(ResidualMethod):
    """f-AnoGAN with WGAN-GP and izif encoder training; see the module docstring.

    Single-process training only (a clear error under torchrun). Phase lengths derive from
    ``TrainConfig.iterations`` (``epochs`` is refused): ``gan_fraction`` of the batches train
    the GAN (:class:`FAnoGANOptions`). Optimisers: Adam lr = ``TrainConfig.lr``, betas (0, 0.9)
    for the GAN (as WGAN-GP), (0.9, 0.999) for the encoder.
    """

    name: ClassVar[str] = "f-anogan"
    description: ClassVar[str] = (
        "f-AnoGAN: WGAN-GP generator + critic, then an encoder trained for image + critic-feature "
        "residual (Schlegl et al. 2019); map = |x − G(E(x))|"
    )
    variational: ClassVar[bool] = False
    Options = FAnoGANOptions
    options: FAnoGANOptions

    def build(self) -> nn.ModuleDict:
        """Build the WGAN generator (the VAE decoder), critic and izif encoder."""
        cfg = self.config.model
        return nn.ModuleDict({
            "model": self.network(),
            "critic": Discriminator(resolution=cfg.resolution, width=cfg.width, norm="none"),
        })

    def optimizers(self, modules: nn.ModuleDict) -> dict[str, torch.optim.Optimizer]:
        """Return Adam optimisers for the generator, the critic and the encoder."""
        lr = self.config.train.lr
        net = vae_of(modules)
        return {
            "generator": adam(decoder_parameters(net), lr=lr, betas=(0.0, 0.9)),
            "critic": adam(modules["critic"].parameters(), lr=lr, betas=(0.0, 0.9)),
            "encoder": adam(encoder_parameters(net), lr=lr),
        }

    @property
    def gan_iterations(self) -> int:
        """Iterations of phase 1 (the GAN); the rest trains the encoder."""
        return max(1, round(self.options.gan_fraction * self.config.train.iterations))

    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> Logs:
        """Run a WGAN-GP step (phase 1) or an izif encoder step (phase 2), by ``iteration``.

        Returns the same keys in both phases: ``loss`` (the phase's objective), ``critic``,
        ``gp``, ``generator``, ``izif`` (0-d tensors, or 0.0 where not computed) and ``phase``
        (1.0 or 2.0).
        """
        if modules["model"] is not vae_of(modules):
            # Each phase uses half of the network outside its forward(), which DDP cannot sync.
            raise CavlogError(f"method {self.name!r} does not support multi-process (torchrun) "
                              "training; run it in a single process")
        if self.config.train.epochs is not None:
            raise CavlogError(f"method {self.name!r} schedules its GAN and encoder phases by "
                              f"iteration: use --iterations instead of --epochs")
        net, critic = vae_of(modules), modules["critic"]
        x = batch.images
        logs: Logs = dict.fromkeys(("critic", "gp", "generator", "izif"), 0.0)
        if iteration < self.gan_iterations:
            z = torch.randn(x.shape[0], net.latent_dim, device=x.device)
            fake = torch.sigmoid(net.decode(z).float())
            gp = gradient_penalty(critic, x, fake.detach())
            c_loss = critic(fake.detach()).logits.mean() - critic(x).logits.mean() \
                + self.options.gp_weight * gp
            optimizers["critic"].zero_grad(set_to_none=True)
            c_loss.backward()
            optimizers["critic"].step()
            logs.update(critic=c_loss.detach(), gp=gp.detach())
            loss = logs["critic"]
            if iteration % self.options.n_critic == 0:
                g_loss = -critic(fake).logits.mean()
                optimizers["generator"].zero_grad(set_to_none=True)
                g_loss.backward()
                optimizers["generator"].step()
                logs["generator"] = g_loss.detach()
            return {"loss": loss, **logs, "phase": 1.0}

        net.up.eval()  # the generator is frozen: keep its batch-norm statistics from phase 1
        mu = net.encode(x).mu
        recon = torch.sigmoid(net.decode(mu).float())
        feat_real = critic(x).features.detach()
        feat_fake = critic(recon).features
        izif = F.mse_loss(recon, x) + self.options.kappa * F.mse_loss(feat_fake, feat_real)
        optimizers["encoder"].zero_grad(set_to_none=True)
        izif.backward()
        optimizers["encoder"].step()
        logs["izif"] = izif.detach()
        return {"loss": logs["izif"], **logs, "phase": 2.0}
