"""preprocess_torch: the device path of slice preparation equals the numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cavlog_core.config import PreprocessConfig
from cavlog_core.data.io import case_from_arrays
from cavlog_core.data.preprocess import prepare_slices
from cavlog_core.data.preprocess_torch import brain_percentiles, prepare_slices_on, supports
from cavlog_core.errors import CavlogError
from helpers import phantom

CPU = torch.device("cpu")


@pytest.mark.parametrize("n", [1, 2, 7, 1000])
def test_brain_percentiles_equal_numpy(n):
    values = np.random.default_rng(n).normal(300, 40, n).astype(np.float32)
    for qs in [(1.0, 99.0), (0.0, 100.0), (12.5, 50.0)]:
        got = brain_percentiles(torch.from_numpy(values), qs)
        np.testing.assert_allclose(got, np.percentile(values, qs), rtol=1e-12)
    with pytest.raises(CavlogError, match="brain mask is empty"):
        brain_percentiles(torch.zeros(0), (1.0, 99.0))


@pytest.mark.parametrize(("shape", "resolution"), [((40, 36, 14), 64), ((30, 50, 9), 32)])
def test_device_slices_equal_prepare_slices(shape, resolution):
    flair, seg, brain = phantom(shape, seed=3)
    case = case_from_arrays(flair, seg=seg, brain_mask=brain, case_id="T1")
    cfg = PreprocessConfig(resolution=resolution)
    z = np.flatnonzero(brain.any(axis=(0, 1)))[::2]
    ref = prepare_slices(case, cfg, z, lesion=False)
    got = prepare_slices_on(case, cfg, z, CPU)
    assert len(got) == len(ref) and got.z.tolist() == z.tolist() and got.case_id == "T1"
    assert got.geometry == ref.geometry
    assert got.images.dtype == torch.float32 and got.images.shape == ref.images.shape
    np.testing.assert_allclose(got.images.numpy(), ref.images, atol=2e-6)
    assert np.array_equal(got.brain.numpy(), ref.brain)
    assert np.array_equal(got.brain_slices.numpy(), ref.brain_slices)


def test_device_path_scope_and_errors():
    assert supports(PreprocessConfig())
    assert not supports(PreprocessConfig(normalization="max-histogram"))
    assert not supports(PreprocessConfig(histogram_reference="ref.nii.gz"))
    flair, _seg, brain = phantom((20, 20, 8))
    case = case_from_arrays(flair, brain_mask=brain, case_id="E")
    with pytest.raises(CavlogError, match="only 'percentile'"):
        prepare_slices_on(case, PreprocessConfig(normalization="max-histogram"), np.arange(2), CPU)
    with pytest.raises(CavlogError, match=r"E: slice indices must lie in \[0, 7\]"):
        prepare_slices_on(case, PreprocessConfig(resolution=32), np.array([3, 8]), CPU)
