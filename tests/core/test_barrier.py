"""Extended log-barrier ψ_t (Kervadec et al.): hand-computed values, C¹ junction, finiteness."""

import math

import pytest
import torch

from cavlog_core.config import TrainConfig
from cavlog_core.methods.gradcam_vae import barrier_active, t_at, uses_attention_loss
from cavlog_core.models.barrier import barrier_threshold, extended_log_barrier


def psi(z: float, t: float) -> float:
    """Reference written from the formula, in plain floats."""
    if z <= -1 / t**2:
        return -math.log(-z) / t
    return t * z - math.log(1 / t**2) / t + 1 / t


@pytest.mark.parametrize(
    ("z", "t", "expected"),
    [
        (-0.5, 20.0, math.log(2) / 20),  # log branch: -log(0.5)/20 = 0.034657...
        (-1 / 400, 20.0, math.log(400) / 20),  # junction, log branch: 0.299573...
        (0.0, 20.0, (2 * math.log(20) + 1) / 20),  # linear branch: 0.349573...
        (0.1, 20.0, 2.0 + (2 * math.log(20) + 1) / 20),  # violated by 0.1: 2.349573...
        (-2.0, 1.0, -math.log(2)),  # t = 1: junction at -1
        (-1.0, 1.0, 0.0),
        (0.5, 1.0, 1.5),  # 0.5 - log(1) + 1
    ],
)
def test_hand_computed_values(z, t, expected):
    got = extended_log_barrier(torch.tensor([z], dtype=torch.float64), t)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert psi(z, t) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("t", [1.0, 5.0, 20.0, 50.0])
def test_value_and_derivative_continuous_at_junction(t):
    z0 = barrier_threshold(t)
    assert z0 == pytest.approx(-1 / t**2)
    eps = 1e-9
    z = torch.tensor([z0 - eps, z0, z0 + eps], dtype=torch.float64, requires_grad=True)
    v = extended_log_barrier(z, t)
    (g,) = torch.autograd.grad(v.sum(), z)
    # value: both sides agree to O(eps * slope)
    assert v[0].item() == pytest.approx(v[2].item(), abs=3 * t * eps)
    assert v[1].item() == pytest.approx(2 * math.log(t) / t, rel=1e-12)
    # derivative: -1/(t z) = t on the log side, t on the linear side
    assert g.tolist() == pytest.approx([t, t, t], rel=1e-5)


def test_gradient_matches_analytic_and_is_finite_everywhere():
    t = 20.0
    z = torch.cat([
        torch.linspace(-5, 5, 2001, dtype=torch.float64),
        torch.tensor([0.0, -0.0, -1e-300, 1e-300, -1 / t**2, 1e6, -1e6], dtype=torch.float64),
    ]).requires_grad_(True)
    v = extended_log_barrier(z, t)
    (g,) = torch.autograd.grad(v.sum(), z)
    assert torch.isfinite(v).all() and torch.isfinite(g).all()
    zd = z.detach()
    analytic = torch.where(zd <= -1 / t**2, -1 / (t * zd), torch.full_like(zd, t))
    torch.testing.assert_close(g, analytic, rtol=1e-12, atol=0)
    ref = torch.tensor([psi(float(x), t) for x in zd], dtype=torch.float64)
    torch.testing.assert_close(v.detach(), ref, rtol=1e-12, atol=1e-12)


def test_float32_zero_and_positive_inputs_have_finite_grad():
    z = torch.tensor([0.0, 0.3, 1.0, -1e-8], requires_grad=True)
    v = extended_log_barrier(z, 20.0)
    v.sum().backward()
    assert torch.isfinite(v).all() and torch.isfinite(z.grad).all()
    assert z.grad.tolist() == pytest.approx([20.0] * 4)


def test_tensor_t_and_monotonic_and_bad_t():
    z = torch.linspace(-3, 3, 101)
    a = extended_log_barrier(z, torch.tensor(10.0))
    b = extended_log_barrier(z, 10.0)
    torch.testing.assert_close(a, b)
    assert (a[1:] > a[:-1]).all()  # strictly increasing penalty
    with pytest.raises(ValueError, match="t=0"):
        extended_log_barrier(z, 0.0)


def test_t_schedule_and_warmup_switch():
    cfg = TrainConfig(t=20.0, t_growth=2.0, t_every=10, warmup_iterations=5)
    assert [t_at(cfg, i) for i in (0, 5, 14, 15, 24, 25)] == [20, 20, 20, 40, 40, 80]
    assert t_at(TrainConfig(t=20.0), 10**6) == 20.0  # t_growth = 1: constant
    assert not uses_attention_loss(cfg, 4) and uses_attention_loss(cfg, 5)
    assert not uses_attention_loss(cfg, 5, kind="none")


def test_barrier_active_means_linear_region_for_the_barrier():
    # t = 20: junction at -1/400 = -0.0025
    assert barrier_active(torch.tensor([-0.01, -0.001]), kind="barrier", t=20.0)
    assert not barrier_active(torch.tensor([-0.01, -0.003]), kind="barrier", t=20.0)
    assert not barrier_active(torch.tensor([-0.01, -0.001]), kind="l2", t=20.0)
    assert barrier_active(torch.tensor([-0.01, 0.2]), kind="l2", t=20.0)
