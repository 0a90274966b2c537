"""The Grad-CAM VAE family's base: model in :mod:`cavlog_core.models`, loss, training step, map.

:mod:`.loss` holds the objective (VAE loss + λ·attention penalty of a kind, warm-up, t schedule),
:mod:`.method` the Grad-CAM VAE (no penalty), :mod:`.per_dimension` Grad-CAM_D. The paper's
constrained method (:mod:`cavlog_core.methods.constrained`) and CAVGA build on :class:`GradCamVAE`.
"""

from .loss import (
    ConstrainedTerms,
    barrier_active,
    barrier_limit,
    constrained_objective,
    t_at,
    uses_attention_loss,
)
from .method import GradCamVAE
from .per_dimension import GradCamVAED, per_dimension_cams

__all__ = [
    "ConstrainedTerms",
    "GradCamVAE",
    "GradCamVAED",
    "barrier_active",
    "barrier_limit",
    "constrained_objective",
    "per_dimension_cams",
    "t_at",
    "uses_attention_loss",
]
