"""Intensity normalisation, histogram matching, slice selection, resize/pad and its inverse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cavlog_core.config import PreprocessConfig
from cavlog_core.data.io import case_from_arrays, load_case
from cavlog_core.data.preprocess import (
    SliceGeometry,
    match_histogram,
    normalize_intensity,
    prepare_slices,
    select_slices,
)
from cavlog_core.errors import CavlogError
from helpers import phantom, write_nifti


# ------------------------------------------------------------------------------- intensities
def test_normalize_intensity_hand_computed():
    # Brain values 0..100 (101 voxels): p1 = 1, p99 = 99 -> (v - 1) / 98, clipped to [0, 1].
    flair = np.full((101, 1, 2), -7.0, np.float32)
    flair[:, 0, 0] = np.arange(101)
    brain = np.zeros(flair.shape, bool)
    brain[:, 0, 0] = True
    out = normalize_intensity(flair, brain)
    assert out.dtype == np.float32
    expected = np.clip((np.arange(101) - 1.0) / 98.0, 0, 1)
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-6)
    assert (out[:, 0, 1] == 0).all()  # background is 0, whatever its raw value
    out = normalize_intensity(flair, brain, percentiles=(0, 100))
    np.testing.assert_allclose(out[:, 0, 0], np.arange(101) / 100.0, atol=1e-6)
    with pytest.raises(CavlogError, match="brain mask is empty"):
        normalize_intensity(flair, np.zeros_like(brain))


def test_match_histogram_maps_brain_onto_reference_distribution():
    rng = np.random.default_rng(0)
    image = rng.random((10, 10, 4)).astype(np.float32)
    brain = np.zeros(image.shape, bool)
    brain[2:8, 2:8] = True
    reference = rng.normal(5.0, 2.0, size=brain.sum())  # same number of brain voxels
    out = match_histogram(image, brain, reference, np.ones(reference.shape, bool))
    np.testing.assert_allclose(np.sort(out[brain]), np.sort(reference), rtol=1e-6)
    # rank order inside the brain is kept, background stays 0
    assert (np.argsort(out[brain]) == np.argsort(image[brain])).all()
    assert (out[~brain] == 0).all()


# ------------------------------------------------------------------------------- slices
def _brain_with_extent(z0, z1, depth=20):
    brain = np.zeros((6, 6, depth), bool)
    brain[1:5, 1:5, z0:z1 + 1] = True
    return brain


def test_select_slices_central():
    brain = _brain_with_extent(3, 12)  # extent 3..12, centre 7.5
    np.testing.assert_array_equal(select_slices(brain, "central:4"), [6, 7, 8, 9])
    assert select_slices(brain, "central:4").dtype == np.int64
    np.testing.assert_array_equal(select_slices(brain, "central:10"), np.arange(3, 13))
    np.testing.assert_array_equal(select_slices(brain, "central:50"), np.arange(3, 13))
    np.testing.assert_array_equal(select_slices(brain, "central:1"), [8])  # 7.5 rounds half up
    # extent 0..4 (centre 2): [1, 2] and [2, 3] are equally central; ties go up, as above
    np.testing.assert_array_equal(select_slices(_brain_with_extent(0, 4, 5), "central:2"), [2, 3])


def test_select_slices_brain_fraction():
    brain = np.zeros((10, 10, 6), bool)
    for z, side in enumerate([0, 2, 5, 10, 7, 3]):  # areas 0, 4, 25, 100, 49, 9
        brain[:side, :side, z] = True
    np.testing.assert_array_equal(select_slices(brain, "brain", min_brain_fraction=0.2),
                                  [2, 3, 4])
    np.testing.assert_array_equal(select_slices(brain, "brain", min_brain_fraction=0.0),
                                  [1, 2, 3, 4, 5])


@pytest.mark.parametrize("spec", ["central", "central:0", "middle", "central:-2"])
def test_select_slices_bad_spec(spec):
    with pytest.raises(CavlogError, match=f"slices={spec!r}"):
        select_slices(_brain_with_extent(2, 5), spec)


def test_select_slices_empty_brain():
    with pytest.raises(CavlogError, match="brain mask is empty"):
        select_slices(np.zeros((4, 4, 4), bool), "central:2")


# ------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(("shape", "res", "resized", "offsets"), [
    ((240, 240), 224, (224, 224), (0, 0)),
    ((240, 240), 128, (128, 128), (0, 0)),
    ((240, 240), 64, (64, 64), (0, 0)),
    ((200, 240), 64, (53, 64), (5, 0)),
    ((40, 20), 64, (64, 32), (0, 16)),
])
def test_slice_geometry_shapes_and_constant_kept(shape, res, resized, offsets):
    g = SliceGeometry.for_shape(shape, res)
    assert g.resized == resized and g.offsets == offsets and g.scale == res / max(shape)
    const = np.full((3, *shape), 0.7, np.float32)
    model = g.to_model(const)
    assert model.shape == (3, res, res) and model.dtype == np.float32
    ox, oy = offsets
    inside = np.zeros((res, res), bool)
    inside[ox:ox + resized[0], oy:oy + resized[1]] = True
    # float32 resampling: within a few ulps of the constant; the padding exactly 0
    np.testing.assert_array_max_ulp(model[:, inside], np.full_like(model[:, inside], 0.7),
                                   maxulp=4)
    assert (model[:, ~inside] == 0).all()
    back = g.to_volume(model)
    assert back.shape == (3, *shape) and back.dtype == np.float32
    np.testing.assert_array_max_ulp(back, np.full_like(back, 0.7), maxulp=8)


@pytest.mark.parametrize("res", [224, 128, 64])
def test_slice_geometry_smooth_round_trip(res):
    x, y = np.meshgrid(np.linspace(0, 1, 240), np.linspace(0, 1, 200), indexing="ij")
    smooth = (0.5 + 0.3 * np.sin(2 * np.pi * x) * np.cos(np.pi * y)).astype(np.float32)
    g = SliceGeometry.for_shape((240, 200), res)
    back = g.to_volume(g.to_model(smooth[None]))[0]
    err = np.abs(back - smooth)
    assert err.max() < 0.02 * (224 / res) and err.mean() < 0.002 * (224 / res)


def test_slice_geometry_masks_torch_and_bad_shapes():
    g = SliceGeometry.for_shape((60, 48), 64)
    mask = np.zeros((2, 60, 48), bool)
    mask[:, 10:40, 12:30] = True
    small = g.to_model(mask)
    assert small.dtype == bool and small.shape == (2, 64, 64)
    # area scales with scale**2 (64/60)^2
    assert abs(small[0].sum() / (mask[0].sum() * g.scale**2) - 1) < 0.05
    back = g.to_volume(small)
    assert back.dtype == bool and (back == mask).mean() > 0.99
    assert g.to_model(mask, order=0).dtype == bool
    t = g.to_model(torch.from_numpy(mask).float())
    assert isinstance(t, torch.Tensor) and t.shape == (2, 64, 64)
    assert isinstance(g.to_volume(t), torch.Tensor)
    with pytest.raises(CavlogError, match=r"expected \(N, 60, 48\)"):
        g.to_model(np.zeros((2, 48, 60)))
    with pytest.raises(CavlogError, match=r"expected \(N, 64, 64\)"):
        g.to_volume(np.zeros((64, 64)))


# ------------------------------------------------------------------------------- prepare
def test_prepare_slices_shapes_ranges_and_lesion(make_case):
    case = load_case(make_case(shape=(40, 36, 16)))
    batch = prepare_slices(case, PreprocessConfig(resolution=64, slices="central:4"))
    assert batch.images.shape == (4, 1, 64, 64) and batch.images.dtype == np.float32
    assert batch.brain.shape == batch.lesion.shape == (4, 1, 64, 64)
    assert batch.brain.dtype == bool and batch.lesion.dtype == bool
    assert 0 <= batch.images.min() and batch.images.max() <= 1 and batch.images.max() == 1
    assert (batch.images[~batch.brain] < 0.5).all()  # background ~0 (only resize blur)
    assert batch.lesion.any() and (batch.lesion <= batch.brain).mean() > 0.99
    np.testing.assert_array_equal(batch.z, select_slices(case.brain_mask, "central:4"))
    assert batch.geometry.in_shape == (40, 36) and batch.case_id == case.case_id
    np.testing.assert_array_equal(batch.lesion_voxels, (case.seg[:, :, batch.z] > 0).sum((0, 1)))
    # explicit z, no ground truth
    bare = case_from_arrays(case.flair)
    b2 = prepare_slices(bare, PreprocessConfig(resolution=32), z=np.array([5, 6]))
    assert b2.lesion is None and b2.images.shape == (2, 1, 32, 32) and len(b2) == 2
    with pytest.raises(CavlogError, match=r"slice indices must lie in \[0, 15\]"):
        prepare_slices(bare, PreprocessConfig(resolution=32), z=np.array([16]))


def test_prepare_slices_histogram_reference(tmp_path, make_case):
    case = load_case(make_case(shape=(40, 36, 16)))
    flair, _, _ = phantom((40, 36, 16), seed=5, lesion=False)
    ref = write_nifti(tmp_path / "ref.nii.gz", np.sqrt(flair))
    cfg = PreprocessConfig(resolution=32, slices="central:4", histogram_reference=str(ref))
    matched = prepare_slices(case, cfg)
    plain = prepare_slices(case, PreprocessConfig(resolution=32, slices="central:4"))
    assert matched.images.shape == plain.images.shape
    assert 0 <= matched.images.min() and matched.images.max() <= 1
    assert not np.allclose(matched.images, plain.images)
    with pytest.raises(CavlogError, match="histogram_reference="):
        prepare_slices(case, PreprocessConfig(histogram_reference=str(tmp_path / "nope.nii")))
