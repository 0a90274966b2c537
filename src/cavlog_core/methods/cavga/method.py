"""CAVGA (unsupervised variant): attention expanded over the whole image by a pixel-level loss.

Venkataramanan, Peng, Singh & Mahalanobis, "Attention guided anomaly localization in images",
ECCV 2020 (CAVGA_u): the attention map a = σ(Grad-CAM) of normal images is pushed towards 1
everywhere by the expansion loss mean(1 − a), and the anomaly map is 1 − a. Silva-Rodríguez
et al. (BMVC 2021) contrast this pixel-level equality with their image-level inequality constraint.
This implementation keeps the shared VAE and omits CAVGA_u's extra discriminator.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from ..gradcam_vae import GradCamVAE

__all__ = ["CAVGA"]


class CAVGA(GradCamVAE):
    """VAE + λ·mean(1 − a) expansion loss (after the usual warm-up); map = 1 − σ(Grad-CAM)."""

    name: ClassVar[str] = "cavga"
    description: ClassVar[str] = (
        "CAVGA_u: VAE + pixel-level L1 attention expansion loss mean(1 − a) (Venkataramanan et "
        "al. 2020); map = 1 − attention"
    )
    constraint_kind: ClassVar[str | None] = "pixel-l1"

    def map_from_cam(self, cam: Tensor) -> Tensor:
        """1 − σ(cam): after expansion, healthy tissue is attended and lesions are not."""
        return 1.0 - torch.sigmoid(cam)
