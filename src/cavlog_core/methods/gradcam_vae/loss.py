"""The constrained objective, independent of the network: VAE loss + λ·penalty on f_c(a).

Silva-Rodríguez, Naranjo & Dolz, BMVC 2021, Eq. (5): L = L_rec + β·KL + λ·mean_b ψ_t(f_c(a_b)),
with the VAE-only warm-up and the optional t schedule of this implementation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...config import TrainConfig
from ...models.barrier import barrier_threshold
from ...models.gradcam import AttentionOutput
from ...models.losses import constraint_penalty, size_constraint, vae_loss

__all__ = [
    "ConstrainedTerms",
    "barrier_active",
    "barrier_active_flag",
    "barrier_limit",
    "constrained_objective",
    "t_at",
    "uses_attention_loss",
]


def t_at(train: TrainConfig, iteration: int) -> float:
    """Barrier parameter at ``iteration`` (0-based).

    t is ``train.t`` during warm-up and then multiplied by ``train.t_growth`` once every
    ``train.t_every`` iterations counted from the end of the warm-up (``t_growth = 1``: constant).
    """
    after = max(0, iteration - train.warmup_iterations)
    return float(train.t * train.t_growth ** (after // max(1, train.t_every)))


def uses_attention_loss(train: TrainConfig, iteration: int, kind: str | None = None) -> bool:
    """Whether the attention penalty is part of the loss at ``iteration`` (False during warm-up)."""
    kind = train.constraint if kind is None else kind
    return iteration >= train.warmup_iterations and kind != "none" and train.lam > 0


def barrier_active_flag(fc: Tensor, *, kind: str, t: float) -> Tensor:
    """Return :func:`barrier_active` as a 0-d float tensor on ``fc``'s device.

    No host sync: the training step logs it with its other scalars in one copy.
    """
    return (fc.detach() > barrier_limit(kind, t)).any().float()


def barrier_active(fc: Tensor, *, kind: str, t: float) -> bool:
    """Whether any image of the batch is in the penalty's "pushing" regime.

    For ``"barrier"``: some f_c > -1/t², i.e. in the linear extension of ψ_t (every violated
    constraint, f_c > 0, plus the thin band (-1/t², 0] where ψ_t already has slope t). For the
    other kinds: some f_c > 0 (the constraint is violated).
    """
    return bool(barrier_active_flag(fc, kind=kind, t=t))


def barrier_limit(kind: str, t: float) -> float:
    """Return the f_c above which :func:`barrier_active` counts an image: -1/t² (barrier) or 0."""
    return barrier_threshold(t) if kind == "barrier" else 0.0


class ConstrainedTerms(NamedTuple):
    """Loss terms of one batch (scalar Tensors except ``fc``, which is ``(B,)``)."""

    total: Tensor
    recon: Tensor
    kl: Tensor
    penalty: Tensor
    fc: Tensor


def constrained_objective(att: AttentionOutput, x: Tensor, *, train: TrainConfig, iteration: int,
                          kind: str | None = None) -> ConstrainedTerms:
    """Total loss for a forward pass with attention, for ``(B, 1, R, R)`` images ``x``.

    ``kind`` overrides ``train.constraint`` (methods that fix their constraint, e.g. CAVGA's
    ``"pixel-l1"``). During warm-up, or with ``kind="none"``, the penalty is 0 and f_c is reported
    from a detached attention.
    """
    kind = train.constraint if kind is None else kind
    vl = vae_loss(att.vae, x, recon=train.recon, beta=train.beta)
    if uses_attention_loss(train, iteration, kind):
        penalty, fc = constraint_penalty(att.attention, kind=kind, p=train.p,
                                         t=t_at(train, iteration), lam=train.lam)
    else:
        fc = size_constraint(att.attention.detach(), train.p)
        penalty = torch.zeros((), device=x.device)
    return ConstrainedTerms(vl.total + penalty, vl.recon, vl.kl, penalty, fc.detach())
