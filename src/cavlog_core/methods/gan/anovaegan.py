"""AnoVAEGAN: a VAE whose reconstructions must also fool a DCGAN-style discriminator.

Baur, Wiestler, Albarqouni & Navab, "Deep autoencoding models for unsupervised anomaly
segmentation in brain MR images", MICCAI BrainLes 2018. The adversarial term sharpens the
reconstructions of healthy anatomy; the anomaly map is the residual |x − x̂| as for the VAE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...models.losses import vae_loss
from ...models.resnet_vae import ResNetVAE
from ..base import Batch, Logs, MethodOptions, adam, step_if_finite
from ..residual import VAE
from .nets import Discriminator

__all__ = ["AnoVAEGAN", "AnoVAEGANOptions"]


@dataclass(frozen=True)
class AnoVAEGANOptions(MethodOptions):
    """AnoVAEGAN's loss weight.

    Attributes
    ----------
    adv_weight : float
        Weight of the adversarial term relative to the per-pixel reconstruction loss.
    """

    adv_weight: float = 0.01

    def __post_init__(self) -> None:
        if self.adv_weight < 0:
            raise ValueError(f"adv_weight={self.adv_weight}: must be >= 0")


class AnoVAEGAN(VAE):
    """VAE + discriminator on x̂; two Adam optimisers, alternating inside each training step.

    Discriminator step: BCE(D(x), 1) + BCE(D(x̂), 0) on the detached reconstruction. VAE step:
    recon + β·KL + ``adv_weight``·BCE(D(x̂), 1). Adam betas (0.5, 0.999) as in DCGAN.
    """

    name: ClassVar[str] = "anovaegan"
    description: ClassVar[str] = (
        "AnoVAEGAN: VAE + DCGAN-style discriminator on the reconstruction (Baur et al. 2018); "
        "map = |x − x̂|"
    )
    Options = AnoVAEGANOptions
    options: AnoVAEGANOptions

    def build(self) -> nn.ModuleDict:
        """Build the VAE and the discriminator."""
        cfg = self.config.model
        return nn.ModuleDict({
            "model": ResNetVAE.from_config(cfg),
            "discriminator": Discriminator(resolution=cfg.resolution, width=cfg.width,
                                           norm="batch"),
        })

    def optimizers(self, modules: nn.ModuleDict) -> dict[str, torch.optim.Optimizer]:
        """Return one Adam optimiser for the VAE and one for the discriminator."""
        lr = self.config.train.lr
        return {
            "model": adam(modules["model"].parameters(), lr=lr, betas=(0.5, 0.999)),
            "discriminator": adam(modules["discriminator"].parameters(), lr=lr,
                                              betas=(0.5, 0.999)),
        }

    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> Logs:
        """One discriminator step then one VAE step on the same batch.

        Returns 0-d tensors ``loss`` (VAE total), ``recon``, ``kl``, ``adv`` (generator BCE) and
        ``d_loss``. The VAE step is skipped when its loss is not finite.
        """
        train = self.config.train
        x = batch.images
        model, disc = modules["model"], modules["discriminator"]
        opt_g, opt_d = optimizers["model"], optimizers["discriminator"]

        out = model(x)
        fake = torch.sigmoid(out.logits)
        real_logit = disc(x).logits
        fake_logit = disc(fake.detach()).logits
        d_loss = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
                  + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        terms = vae_loss(out, x, recon=train.recon, beta=train.beta)
        gen_logit = disc(fake).logits
        adv = F.binary_cross_entropy_with_logits(gen_logit, torch.ones_like(gen_logit))
        total = terms.total + self.options.adv_weight * adv
        opt_g.zero_grad(set_to_none=True)
        total.backward()  # also fills D's grads; they are cleared before D's next step
        step_if_finite(opt_g, total)
        return {"loss": total.detach(), "recon": terms.recon.detach(), "kl": terms.kl.detach(),
                "adv": adv.detach(), "d_loss": d_loss.detach()}
