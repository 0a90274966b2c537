"""The paper's method: the constrained Grad-CAM VAE.

Model in :mod:`cavlog_core.models`, loss in :mod:`.loss`, training step and anomaly map in
:mod:`.method`.
"""

from ...models.gradcam import unwrap
from .loss import (
    ConstrainedTerms,
    barrier_active,
    barrier_limit,
    constrained_objective,
    t_at,
    uses_attention_loss,
)
from .method import ConstrainedVAE

__all__ = [
    "ConstrainedTerms",
    "ConstrainedVAE",
    "barrier_active",
    "barrier_limit",
    "constrained_objective",
    "t_at",
    "unwrap",
    "uses_attention_loss",
]
