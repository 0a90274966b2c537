"""The extended log-barrier of Kervadec et al. used as the paper's size-constraint penalty.

Kervadec, Dolz, Yuan, Desrosiers, Granger & Ben Ayed, "Constrained deep networks: Lagrangian
optimization via log-barrier extensions", EUSIPCO 2022; used in Silva-Rodríguez et al., BMVC 2021,
Eq. (4) to impose f_c(a) <= 0 on healthy images.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["barrier_threshold", "extended_log_barrier"]


def extended_log_barrier(z: Tensor, t: float | Tensor) -> Tensor:
    r"""Compute the extended log-barrier ψ_t(z) elementwise: a smooth penalty for z <= 0.

    .. math::

        ψ_t(z) = -\\frac{1}{t}\\log(-z)              \\quad z \\le -1/t^2

        ψ_t(z) = t z - \\frac{1}{t}\\log(1/t^2) + \\frac{1}{t}  \\quad \\text{otherwise}

    The linear extension makes ψ_t defined (and finite) for violated constraints z > 0; value
    and first derivative are continuous at z = -1/t², where the slope is t on both sides. Larger
    t approximates the hard indicator of z <= 0 more closely.

    Parameters
    ----------
    z : Tensor
        Constraint values, any shape (e.g. ``(B,)`` values of f_c per image).
    t : float or 0-d Tensor
        Barrier parameter, > 0 (the paper: 20).

    Returns
    -------
    Tensor
        Same shape as ``z``; finite everywhere, with finite gradients (both branches are
        evaluated on safe inputs, so ``torch.where`` cannot leak NaN gradients).
    """
    if not torch.is_tensor(t) and not t > 0:
        raise ValueError(f"extended_log_barrier: t={t} must be > 0")
    t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
    threshold = -1.0 / (t * t)
    inside = z <= threshold
    # Feed the log branch only values where -z >= 1/t², so log() and its gradient stay finite.
    z_log = torch.where(inside, z, threshold)
    log_branch = -torch.log(-z_log) / t
    linear_branch = t * z + (2.0 * torch.log(t) + 1.0) / t  # -log(1/t²)/t = 2 log(t)/t
    return torch.where(inside, log_branch, linear_branch)


def barrier_threshold(t: float) -> float:
    """Return the junction -1/t² between the log branch and the linear extension."""
    if not t > 0:
        raise ValueError(f"barrier_threshold: t={t} must be > 0")
    return -1.0 / (t * t)
