"""Adversarial baselines: f-AnoGAN (Schlegl et al. 2019) and AnoVAEGAN (Baur et al. 2018).

:mod:`.nets` holds the shared DCGAN-style critic / discriminator.
"""

from .anovaegan import AnoVAEGAN, AnoVAEGANOptions
from .fanogan import (
    FAnoGAN,
    FAnoGANOptions,
    decoder_parameters,
    encoder_parameters,
    gradient_penalty,
)
from .nets import CriticOutput, Discriminator

__all__ = [
    "AnoVAEGAN",
    "AnoVAEGANOptions",
    "CriticOutput",
    "Discriminator",
    "FAnoGAN",
    "FAnoGANOptions",
    "decoder_parameters",
    "encoder_parameters",
    "gradient_penalty",
]
