"""``PreprocessConfig.normalization="max-histogram"``: the authors' intensity normalisation."""

import numpy as np
import pytest

from cavlog_core.config import PreprocessConfig
from cavlog_core.data import case_from_arrays, prepare_slices
from cavlog_core.data.preprocess import _builtin_slice_reference, _match_slices
from cavlog_core.errors import CavlogError


def test_match_slices_by_hand():
    # Ranks 2, 0, 1 -> the reference quantiles 1, 0, 0.5; ties share their mean rank.
    images = np.array([[[3.0, 1.0, 2.0]], [[5.0, 5.0, 0.0]]], dtype=np.float32)
    brain = np.ones_like(images, dtype=bool)
    out = _match_slices(images, brain, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(out[0, 0], [1.0, 0.0, 0.5])
    np.testing.assert_allclose(out[1, 0], [0.75, 0.75, 0.0])
    brain[1, 0, 2] = False  # outside the brain: 0
    assert _match_slices(images, brain, np.array([0.0, 1.0]))[1, 0, 2] == 0


def test_max_histogram_gives_the_reference_histogram_whatever_the_scale():
    rng = np.random.default_rng(0)
    flair = rng.gamma(4.0, 50.0, (48, 48, 20)).astype(np.float32)
    brain = np.zeros(flair.shape, bool)
    brain[8:40, 8:40, 2:18] = True
    flair[~brain] = 0
    cfg = PreprocessConfig(resolution=64, slices="brain", normalization="max-histogram")
    a = prepare_slices(case_from_arrays(flair, brain_mask=brain), cfg)
    b = prepare_slices(case_from_arrays(flair * 7.5 - 3, brain_mask=brain), cfg)
    np.testing.assert_allclose(a.images, b.images, atol=1e-6)  # invariant to affine rescaling
    ref = _builtin_slice_reference()
    assert 0 < ref.min() and ref.max() <= 1
    values = a.images[a.brain & (a.images > 0)]
    assert abs(np.median(values) - np.median(ref)) < 0.05
    with pytest.raises(CavlogError, match="normalization='zscore'"):
        PreprocessConfig(normalization="zscore")
