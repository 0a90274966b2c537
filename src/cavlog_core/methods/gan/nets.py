"""DCGAN-style image discriminator / WGAN critic shared by the adversarial baselines.

Radford, Metz & Chintala, "Unsupervised representation learning with deep convolutional generative
adversarial networks", ICLR 2016: 4×4 stride-2 convolutions with LeakyReLU(0.2). The WGAN-GP
critic (Gulrajani et al., NeurIPS 2017) must not use batch norm (the gradient penalty is per
sample), so ``norm="none"`` there.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from torch import Tensor, nn


class CriticOutput(NamedTuple):
    """The critic's output.

    ``logits``: ``(B,)`` real-vs-fake score; ``features``: ``(B, C, h, w)`` last conv features
    (f-AnoGAN's feature residual uses them).
    """

    logits: Tensor
    features: Tensor


class Discriminator(nn.Module):
    """Strided-conv image classifier ``(B, 1, R, R) -> CriticOutput``.

    Halves the resolution with 4×4 stride-2 convolutions until it is at most 8 (64² -> 8², 224² ->
    7²), doubling the channels from ``64·width`` up to ``512·width``; a final convolution over the
    whole remaining map gives one score per image.

    Parameters
    ----------
    resolution : int
        Input side R (a multiple of 32).
    width : float
        Channel multiplier, as :class:`cavlog_core.config.ModelConfig.width`.
    norm : {"batch", "none"}
        Normalisation after every conv but the first (DCGAN: ``"batch"``; WGAN-GP: ``"none"``).
    """

    def __init__(self, *, resolution: int, width: float = 1.0,
                 norm: Literal["batch", "none"] = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm={norm!r}: expected 'batch' or 'none'")
        layers: list[nn.Module] = []
        size, c_in, c_out = resolution, 1, max(8, round(64 * width))
        c_max = max(8, round(512 * width))
        first = True
        while size > 8:
            bias = first or norm == "none"  # a bias before batch norm is redundant
            layers.append(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=bias))
            if not first and norm == "batch":
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            first = False
            size //= 2
            c_in, c_out = c_out, min(c_out * 2, c_max)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, size)

    def forward(self, x: Tensor) -> CriticOutput:
        """Score ``(B, 1, R, R)`` images: logits ``(B,)`` and the features before the head."""
        f = self.features(x)
        return CriticOutput(self.head(f).flatten(), f)
