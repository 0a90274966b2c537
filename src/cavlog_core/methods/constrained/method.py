"""The paper's method: the Grad-CAM VAE with its attention held to the whole healthy image.

Silva-Rodríguez, Naranjo & Dolz, "Looking at the whole picture: constrained unsupervised anomaly
segmentation", BMVC 2021: a ResNet-18 VAE whose layer-1 Grad-CAM is pushed to cover the whole
healthy image by an extended log-barrier on f_c(a) = (1 - mean(a)) - p <= 0.
"""

from __future__ import annotations

from typing import ClassVar

from ..gradcam_vae import GradCamVAE

__all__ = ["ConstrainedVAE"]


class ConstrainedVAE(GradCamVAE):
    """Grad-CAM VAE + λ·mean_b ψ_t(f_c(a_b)) after the VAE-only warm-up (the paper's model).

    The penalty is ``TrainConfig.constraint``: ``"barrier"`` (the paper's extended log-barrier
    ψ_t) or the ablations ``"l2"``, ``"pixel-l1"`` and ``"none"``; everything else (the step, the
    CAM, the map) is the :class:`~cavlog_core.methods.gradcam_vae.GradCamVAE`'s.
    """

    name: ClassVar[str] = "constrained"
    description: ClassVar[str] = (
        "the paper's method: ResNet-18 VAE with layer-1 Grad-CAM constrained to cover healthy "
        "images by an extended log-barrier (Silva-Rodríguez et al. 2021)"
    )
    constraint_kind: ClassVar[str | None] = None
