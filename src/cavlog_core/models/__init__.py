"""Networks and losses shared by the paper's method and the baselines."""

from .barrier import barrier_threshold, extended_log_barrier
from .gradcam import AttentionOutput, attention, encoder_cam, grad_cam, upsample_cam
from .losses import (
    VAELoss,
    constraint_penalty,
    kl_divergence,
    reconstruction_loss,
    size_constraint,
    ssim,
    vae_loss,
)
from .resnet_vae import EncoderOutput, ResNetVAE, VAEOutput

__all__ = [
    "AttentionOutput",
    "EncoderOutput",
    "ResNetVAE",
    "VAELoss",
    "VAEOutput",
    "attention",
    "barrier_threshold",
    "constraint_penalty",
    "encoder_cam",
    "extended_log_barrier",
    "grad_cam",
    "kl_divergence",
    "reconstruction_loss",
    "size_constraint",
    "ssim",
    "upsample_cam",
    "vae_loss",
]
