"""The paper's variational auto-encoder: a ResNet-18 encoder and a residual up-sampling decoder.

Silva-Rodríguez, Naranjo & Dolz, "Looking at the whole picture: constrained unsupervised anomaly
segmentation", BMVC 2021, Sec. 4 (implementation details): ResNet-18 encoder on 1-channel 224²
slices, dense latent space z = 32, decoder of five residual up-sampling blocks; about 14.5 M
parameters at 224² and width 1.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig

__all__ = ["EncoderOutput", "ResNetVAE", "VAEOutput"]

#: Encoder stage channels of ResNet-18 at width 1 (layer1 .. layer4).
ENCODER_CHANNELS = (64, 128, 256, 512)
#: Decoder channels at width 1: the reshaped latent, then the output of each up-sampling block.
DECODER_CHANNELS = (32, 256, 128, 64, 32, 16)


def _scaled(channels: int, width: float) -> int:
    # Keep at least 2 channels so BatchNorm and Grad-CAM stay meaningful at tiny widths.
    return max(2, round(channels * width))


class EncoderOutput(NamedTuple):
    """What :meth:`ResNetVAE.encode` returns.

    Attributes
    ----------
    features : (B, C, h, w) Tensor
        Activations of the Grad-CAM stage (``cam_stage``; layer1 -> h = R / 4).
    mu : (B, Z) Tensor
        Posterior mean.
    logvar : (B, Z) Tensor
        Posterior log-variance log σ².
    """

    features: Tensor
    mu: Tensor
    logvar: Tensor


class VAEOutput(NamedTuple):
    """What :meth:`ResNetVAE.forward` returns, in training and in evaluation mode alike.

    Attributes
    ----------
    logits : (B, 1, R, R) Tensor
        Reconstruction logits (apply a sigmoid for intensities in [0, 1]).
    mu, logvar : (B, Z) Tensor
        Posterior parameters.
    z : (B, Z) Tensor
        The decoded latent: a reparameterised sample in training mode, ``mu`` in evaluation mode.
    features : (B, C, h, w) Tensor
        Activations of the Grad-CAM stage.
    """

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    features: Tensor


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv-BN layers plus identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        # In place: neither conv/BN backward nor the sum's needs these outputs (as torchvision).
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class UpBlock(nn.Module):
    """Residual up-sampling block: nearest x2, (3x3 conv, ReLU, BN) twice, plus a 3x3 conv skip."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
            nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout),
        )
        self.skip = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.main(up) + self.skip(up)


class ResNetVAE(nn.Module):
    """ResNet-18 VAE of the paper, for ``(B, 1, R, R)`` slices.

    Encoder: 7x7 stride-2 stem (1 input channel) + BN + ReLU + 3x3 stride-2 max-pool, then four
    stages of two :class:`BasicBlock` (64, 128, 256, 512 channels x ``width``; strides 1, 2, 2, 2),
    so at R = 224 the stage outputs are 56², 28², 14², 7². The latent is dense: μ and log σ² are
    ``Linear(flatten(layer4) -> latent_dim)``. Decoder: ``Linear(latent_dim -> 32·s·s)`` with
    s = R / 32, reshaped, five :class:`UpBlock` (32 -> 256 -> 128 -> 64 -> 32 -> 16 channels x
    ``width``) and a 3x3 conv to one channel of logits.

    Parameters
    ----------
    resolution : int
        Input side R; a multiple of 32 (224, 128, 64 ...).
    width : float
        Channel multiplier (1.0 = the paper, about 14.5 M parameters at 224²; 0.25 for the CPU).
    latent_dim : int
        Size of z (the paper: 32).
    cam_stage : int
        Encoder stage 1-4 whose output is returned as ``features`` (the paper: 1, "layer1").
    dropout : float
        Dropout on the latent code before decoding (used by MC-dropout baselines; 0 = off).
    """

    def __init__(
        self,
        *,
        resolution: int = 224,
        width: float = 1.0,
        latent_dim: int = 32,
        cam_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # Reuse the config's validation so the model and the CLI reject the same values.
        ModelConfig(resolution=resolution, width=width, latent_dim=latent_dim,
                    cam_stage=cam_stage, dropout=dropout)
        self.resolution = resolution
        self.width = width
        self.latent_dim = latent_dim
        self.cam_stage = cam_stage
        self.side = resolution // 32

        enc = [_scaled(c, width) for c in ENCODER_CHANNELS]
        self.stem = nn.Sequential(
            nn.Conv2d(1, enc[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(enc[0]),
            # max-pool then ReLU equals ReLU then max-pool (ReLU is monotone) and touches 4x
            # fewer values; no parameters, so checkpoints of either order load alike.
            nn.MaxPool2d(3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        stages = []
        cin = enc[0]
        for i, cout in enumerate(enc):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.ModuleList(stages)
        flat = enc[-1] * self.side * self.side
        self.fc_mu = nn.Linear(flat, latent_dim)
        self.fc_logvar = nn.Linear(flat, latent_dim)

        dec = [_scaled(c, width) for c in DECODER_CHANNELS]
        self.decoder_channels = dec[0]
        self.fc_dec = nn.Linear(latent_dim, dec[0] * self.side * self.side)
        self.latent_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.Sequential(*(UpBlock(a, b) for a, b in itertools.pairwise(dec)))
        self.head = nn.Conv2d(dec[-1], 1, 3, padding=1)

    @classmethod
    def from_config(cls, config: ModelConfig) -> ResNetVAE:
        """Build from a :class:`~cavlog_core.config.ModelConfig`."""
        return cls(resolution=config.resolution, width=config.width, latent_dim=config.latent_dim,
                   cam_stage=config.cam_stage, dropout=config.dropout)

    # -- encoder, split at the Grad-CAM stage so inference can skip graph building before it --
    def features_at(self, x: Tensor, stage: int | None = None) -> Tensor:
        """Output of encoder stage ``stage`` (default ``cam_stage``) for ``(B, 1, R, R)`` input."""
        stage = self.cam_stage if stage is None else stage
        self._check_input(x)
        h = self.stem(x)
        for block in self.stages[:stage]:
            h = block(h)
        return h

    def encode_from(self, features: Tensor, stage: int | None = None) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)`` from the output of encoder stage ``stage`` (default ``cam_stage``)."""
        stage = self.cam_stage if stage is None else stage
        h = features
        for block in self.stages[stage:]:
            h = block(h)
        h = h.flatten(1)
        return self.fc_mu(h), self.fc_logvar(h)

    def encode(self, x: Tensor) -> EncoderOutput:
        """Encode ``(B, 1, R, R)`` images: ``EncoderOutput(features, mu, logvar)``."""
        features = self.features_at(x)
        mu, logvar = self.encode_from(features)
        return EncoderOutput(features, mu, logvar)

    def decode(self, z: Tensor) -> Tensor:
        """``(B, Z)`` latent -> ``(B, 1, R, R)`` reconstruction logits."""
        h = self.fc_dec(self.latent_dropout(z))
        h = h.view(z.shape[0], self.decoder_channels, self.side, self.side)
        return self.head(self.up(h))

    def reparameterize(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """Z = μ + ε·σ with ε ~ N(0, I) in training mode; μ in evaluation mode."""
        if not self.training:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    def forward(self, x: Tensor) -> VAEOutput:
        """Encode, sample and decode ``(B, 1, R, R)`` images; see :class:`VAEOutput`."""
        features, mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return VAEOutput(self.decode(z), mu, logvar, z, features)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.resolution \
                or x.shape[3] != self.resolution:
            raise ValueError(
                f"ResNetVAE expects (B, 1, {self.resolution}, {self.resolution}) input, "
                f"got {tuple(x.shape)}"
            )
