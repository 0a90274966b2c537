"""normalize_maps, erode_masks, healthy_thresholds, parse_threshold: hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cavlog_core.errors import CavlogError
from cavlog_core.maps.normalize import erode_masks, normalize_maps
from cavlog_core.maps.thresholds import (
    healthy_thresholds,
    parse_threshold,
    threshold_strategies,
)


def _square(size: int, lo: int, hi: int) -> torch.Tensor:
    m = torch.zeros(1, 1, size, size, dtype=torch.bool)
    m[..., lo:hi, lo:hi] = True
    return m


def test_erode_square_by_one_and_two():
    m = _square(10, 2, 8)  # 6x6 square
    e1 = erode_masks(m, 1)
    assert e1.dtype == torch.bool
    assert torch.equal(e1, _square(10, 3, 7))
    assert torch.equal(erode_masks(m, 2), _square(10, 4, 6))
    assert torch.equal(erode_masks(m, 0), m)
    # The image border counts as outside: a full mask loses its outer ring.
    full = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    assert torch.equal(erode_masks(full, 1), _square(5, 1, 4))
    with pytest.raises(CavlogError, match="erosion=-1"):
        erode_masks(m, -1)


@pytest.mark.parametrize("erosion", [1, 2, 3])
def test_erode_matches_scipy_on_random_masks(erosion):
    from scipy import ndimage

    rng = np.random.default_rng(erosion)
    masks = ndimage.binary_opening(rng.random((3, 1, 23, 17)) > 0.3, np.ones((1, 1, 2, 2)))
    square = np.ones((1, 1, 2 * erosion + 1, 2 * erosion + 1), bool)
    expected = ndimage.binary_erosion(masks, square, border_value=0)
    assert torch.equal(erode_masks(torch.from_numpy(masks), erosion), torch.from_numpy(expected))


def test_normalize_maps_minmax_inside_eroded_brain():
    torch.manual_seed(0)
    brain = _square(10, 2, 8).repeat(2, 1, 1, 1)
    raw = torch.arange(200, dtype=torch.float32).reshape(2, 1, 10, 10)
    raw[0, 0, 2, 2] = 1e6  # bright rim pixel: removed by erosion, must not set the max
    raw[1] *= -1.0  # a decreasing map
    out = normalize_maps(raw, brain, erosion=1)
    inner = _square(10, 3, 7)[0, 0]
    assert out.shape == raw.shape and out.dtype == torch.float32
    assert torch.all(out[:, :, ~inner] == 0)
    v0 = out[0, 0][inner].reshape(4, 4)
    # raw inside the inner square is 10*r + c for r, c in 3..6: min 33 -> 0, max 66 -> 1.
    expected = (10 * torch.arange(3, 7).view(4, 1) + torch.arange(3, 7).view(1, 4) - 33) / 33.0
    assert torch.allclose(v0, expected)
    assert out[1, 0, 3, 3] == 1.0 and out[1, 0, 6, 6] == 0.0


def test_normalize_maps_guards_constant_empty_and_nonfinite():
    brain = torch.zeros(4, 1, 6, 6, dtype=torch.bool)
    brain[0, :, 1:5, 1:5] = True
    brain[1, :, 2:4, 2:4] = True  # 2x2: erosion by 1 leaves nothing -> uneroded mask used
    brain[3, :, 1:5, 1:5] = True
    raw = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    raw[0] = 3.0  # constant map -> zeros
    raw[3, 0, 2, 2] = float("nan")
    raw[3, 0, 2, 3] = float("inf")
    out = normalize_maps(raw, brain, erosion=1)
    assert torch.all(out[0] == 0)
    assert torch.all(out[2] == 0)  # no brain at all
    b1 = out[1, 0, 2:4, 2:4]
    assert b1.min() == 0 and b1.max() == 1
    assert torch.isfinite(out).all() and out[3, 0, 2, 2] == 0 and out[3, 0, 2, 3] == 0
    with pytest.raises(CavlogError, match=r"\(B, 1, R, R\)"):
        normalize_maps(raw[:, 0], brain[:, 0], erosion=1)
    with pytest.raises(CavlogError, match="does not match"):
        normalize_maps(raw, brain[:2], erosion=1)


def test_healthy_thresholds_equal_numpy_percentiles_averaged():
    torch.manual_seed(0)
    maps = torch.rand(5, 1, 12, 12)
    brain = torch.rand(5, 1, 12, 12) > 0.4
    brain[4] = False  # no brain: skipped, not averaged as zeros
    got = healthy_thresholds(maps, brain, percentiles=(85, 90, 95, 98, 99))
    assert list(got) == ["healthy_p85", "healthy_p90", "healthy_p95", "healthy_p98", "healthy_p99"]
    m, b = maps.numpy()[:4], brain.numpy()[:4]
    for q in (85, 90, 95, 98, 99):
        want = np.mean([np.percentile(m[i][b[i]], q) for i in range(4)])
        assert got[f"healthy_p{q}"] == pytest.approx(want, abs=1e-6)
    # Tiny hand case: brain values {0, 1, 2, 3}: p50 = 1.5 (linear interpolation).
    t = torch.tensor([0.0, 1.0, 2.0, 3.0, 9.0]).view(1, 1, 1, 5)
    b = torch.tensor([True, True, True, True, False]).view(1, 1, 1, 5)
    got = healthy_thresholds(t, b, percentiles=(50, 100))
    assert got == {"healthy_p50": 1.5, "healthy_p100": 3.0}


def test_healthy_thresholds_errors():
    maps = torch.rand(2, 1, 4, 4)
    with pytest.raises(CavlogError, match="none of the 2 maps"):
        healthy_thresholds(maps, torch.zeros(2, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(CavlogError, match="percentiles"):
        healthy_thresholds(maps, maps > 0.5, percentiles=(101,))


def test_parse_threshold_specs():
    th = {"healthy_p85": 0.3, "healthy_p90": 0.4, "healthy_p95": 0.55, "healthy_p99": 0.8}
    assert parse_threshold("0.5", th) == (0.5, "fixed_0.5")
    assert parse_threshold(" 0.25 ", None) == (0.25, "fixed_0.25")
    assert parse_threshold(0.7, th) == (0.7, "fixed_0.7")
    assert parse_threshold("healthy", th) == (0.55, "healthy_p95")
    assert parse_threshold("healthy:p90", th) == (0.4, "healthy_p90")
    assert parse_threshold("healthy:99", th) == (0.8, "healthy_p99")
    assert parse_threshold("healthy_p85", th) == (0.3, "healthy_p85")
    with pytest.raises(CavlogError, match=r"'healthy:p97'.*no healthy_p97"):
        parse_threshold("healthy:p97", th)
    with pytest.raises(CavlogError, match=r"'healthy'.*available: none"):
        parse_threshold("healthy", {})
    for bad in ("abc", "healthy:", "1.5", "-0.1", "nan"):
        with pytest.raises(CavlogError, match=repr(bad).replace(".", r"\.")):
            parse_threshold(bad, th)


def test_threshold_strategies_order():
    th = {"healthy_p99": 0.9, "healthy_p85": 0.2, "healthy_p95": 0.5, "other": 1.0}
    want = ["fixed_0.5", "healthy_p85", "healthy_p95", "healthy_p99"]
    assert list(threshold_strategies(th)) == want
    assert threshold_strategies(None) == {"fixed_0.5": 0.5}


def test_fpr_thresholds_by_hand_and_parsing():
    from cavlog_core.maps.thresholds import (
        healthy_fpr_thresholds,
        parse_threshold,
        threshold_strategies,
    )

    values = torch.arange(1000, dtype=torch.float32) / 999  # 0, 1/999, ..., 1
    t = healthy_fpr_thresholds(values, (1.0, 5.0))
    assert t == pytest.approx({"healthy_fpr1": 0.99, "healthy_fpr5": 0.95})
    assert float((values >= t["healthy_fpr1"]).float().mean()) == pytest.approx(0.01, abs=1e-3)
    assert parse_threshold("healthy:fpr1", t) == (pytest.approx(0.99), "healthy_fpr1")
    with pytest.raises(CavlogError, match=r"no healthy_fpr0\.5"):
        parse_threshold("healthy:fpr0.5", t)
    assert list(threshold_strategies({"healthy_p95": 0.9, **t})) == [
        "fixed_0.5", "healthy_p95", "healthy_fpr5", "healthy_fpr1"]
    with pytest.raises(CavlogError, match="fprs="):
        healthy_fpr_thresholds(values, (0.0,))
