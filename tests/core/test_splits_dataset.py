"""Patient-level splits, the evaluation filter and cached slice arrays."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest

from cavlog_core.config import PreprocessConfig, TrainConfig
from cavlog_core.data.dataset import (
    build_slice_arrays,
    healthy,
    iter_slice_arrays,
)
from cavlog_core.data.io import case_from_arrays, find_cases, load_case
from cavlog_core.data.splits import (
    keep_for_evaluation,
    lesion_fraction,
    split_cases,
    split_counts,
)
from cavlog_core.errors import CavlogError


# ------------------------------------------------------------------------------- splits
def test_split_counts_paper_and_edge_cases():
    assert split_counts(335) == (271, 32, 32)  # BraTS'19 as in the paper
    assert split_counts(335, TrainConfig().split_fractions) == (271, 32, 32)
    assert split_counts(20) == (16, 2, 2)
    assert split_counts(10, (1, 0, 0)) == (10, 0, 0)
    assert split_counts(10, (0.5, 0.25, 0.25)) == (5, 3, 2)  # tie 2.5/2.5: val first
    assert split_counts(0) == (0, 0, 0)
    with pytest.raises(CavlogError, match=r"fractions=\(0.5, 0.2, 0.2\)"):
        split_counts(10, (0.5, 0.2, 0.2))


def test_split_cases_deterministic_and_order_independent():
    ids = [f"BraTS19_{i:03d}" for i in range(335)]
    a = split_cases(ids, seed=0)
    b = split_cases(list(reversed(ids)), seed=0)
    rng = np.random.default_rng(1)
    c = split_cases([ids[i] for i in rng.permutation(335)], seed=0)
    assert a == b == c
    assert [len(a[k]) for k in ("train", "val", "test")] == [271, 32, 32]
    assert sorted(a["train"] + a["val"] + a["test"]) == ids  # disjoint and complete
    assert all(a[k] == sorted(a[k]) for k in a)
    assert split_cases(ids, seed=1) != a
    assert split_cases(ids[:5], (1, 0, 0)) == {"train": ids[:5], "val": [], "test": []}
    with pytest.raises(CavlogError, match="duplicate case ids"):
        split_cases(["a", "b", "a"])


# ------------------------------------------------------------------------------- lesion rules
def test_lesion_fraction_and_evaluation_filter():
    flair = np.zeros((10, 10, 4), np.float32)
    flair[:, :, :] = 1.0
    brain = np.zeros(flair.shape, bool)
    brain[:5] = True  # 50 brain voxels per slice
    seg = np.zeros(flair.shape, np.uint8)
    seg[0, :5, 1] = 2  # 5 lesion voxels in slice 1
    seg[9, 9, 2] = 1  # outside the brain: not counted
    case = case_from_arrays(flair, seg=seg, brain_mask=brain)
    assert lesion_fraction(case, np.array([1])) == pytest.approx(5 / 50)
    assert lesion_fraction(case, np.array([0, 1])) == pytest.approx(5 / 100)
    assert lesion_fraction(case) == pytest.approx(5 / 200)
    assert lesion_fraction(case, np.array([3])) == 0.0
    assert keep_for_evaluation(case, np.array([0, 1]), min_lesion_fraction=0.05)
    assert not keep_for_evaluation(case, np.array([0, 1]), min_lesion_fraction=0.051)
    assert not keep_for_evaluation(case, np.array([3]))  # lesion-free scans are dropped
    no_gt = case_from_arrays(flair, brain_mask=brain)
    assert not keep_for_evaluation(no_gt)
    with pytest.raises(CavlogError, match="no ground truth"):
        lesion_fraction(no_gt)


# ------------------------------------------------------------------------------- slice arrays
@pytest.fixture
def three_cases(tmp_path, make_case):
    root = tmp_path / "ds"
    make_case("S1", root=root, shape=(30, 26, 16))
    make_case("S2", root=root, shape=(30, 26, 16), lesion=False, seed=1)  # healthy scan
    make_case("S3", root=root, shape=(30, 26, 16), seed=2)
    return root


CFG = PreprocessConfig(resolution=32, slices="brain", min_brain_fraction=0.1)


def test_build_slice_arrays_layout_and_healthy_filter(three_cases, tmp_path):
    arrays = build_slice_arrays(three_cases, CFG, cache_dir=tmp_path / "cache")
    n = len(arrays)
    assert arrays.images.shape == (n, 1, 32, 32) and arrays.images.dtype == np.float16
    assert arrays.brain.dtype == bool and arrays.lesion.shape == (n, 1, 32, 32)
    assert arrays.case_ids == ("S1", "S2", "S3")
    assert np.bincount(arrays.case_index).tolist() == [
        len(arrays.subset(arrays.case_index == i)) for i in range(3)]
    # slices of each case equal prepare_slices on that case (float16 rounding aside)
    from cavlog_core.data.preprocess import prepare_slices

    s1 = prepare_slices(load_case(three_cases / "S1"), CFG)
    part = arrays.for_cases(["S1"])
    np.testing.assert_array_equal(part.z, s1.z)
    np.testing.assert_allclose(part.images.astype(np.float32), s1.images, atol=1e-3)
    lesioned = arrays.lesion.reshape(n, -1).any(axis=1)
    assert lesioned.any() and not lesioned[arrays.case_index == 1].any()
    h = healthy(arrays)
    assert len(h) == n - lesioned.sum() and not h.lesion.any()
    h2 = build_slice_arrays(three_cases, CFG, cache_dir=tmp_path / "cache", healthy_only=True)
    np.testing.assert_array_equal(h2.z, h.z)
    np.testing.assert_array_equal(h2.case_index, h.case_index)


def test_second_build_reads_no_nifti_and_changes_invalidate(three_cases, tmp_path, monkeypatch):
    calls = []
    real_load = nib.load

    def counting_load(*args, **kwargs):
        calls.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(nib, "load", counting_load)
    cache = tmp_path / "cache"
    events = []
    gen = iter_slice_arrays(three_cases, CFG, cache_dir=cache)
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        first = stop.value
    assert [(e.done, e.total, e.case_id, e.from_cache) for e in events] == [
        (1, 3, "S1", False), (2, 3, "S2", False), (3, 3, "S3", False)]
    assert len(calls) == 6  # FLAIR + seg of three cases
    assert len(list(cache.glob("*.npz"))) == 3

    calls.clear()
    second = build_slice_arrays(three_cases, CFG, cache_dir=cache)
    assert calls == []
    np.testing.assert_array_equal(second.images, first.images)
    np.testing.assert_array_equal(second.lesion, first.lesion)

    # another resolution, or a touched file, is a cache miss for what changed only
    build_slice_arrays(three_cases, PreprocessConfig(resolution=64, slices="brain",
                                                     min_brain_fraction=0.1), cache_dir=cache)
    assert len(calls) == 6
    calls.clear()
    seg = three_cases / "S2" / "S2_seg.nii.gz"
    st = seg.stat()
    os.utime(seg, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    build_slice_arrays(three_cases, CFG, cache_dir=cache)
    assert sorted(p.name for p in calls) == ["S2_flair.nii.gz", "S2_seg.nii.gz"]


def test_default_cache_dir_and_in_memory_cases(three_cases):
    files = find_cases(three_cases)
    build_slice_arrays(files[:1], CFG)
    assert len(list((three_cases / ".cavlog_cache").glob("S1-*.npz"))) == 1
    assert [c.case_id for c in find_cases(three_cases)] == ["S1", "S2", "S3"]  # cache skipped
    mem = case_from_arrays(load_case(files[1]).flair, case_id="mem")
    arrays = build_slice_arrays([mem], CFG)
    assert arrays.lesion is None and arrays.case_ids == ("mem",) and len(healthy(arrays)) > 0


def test_build_errors(three_cases):
    with pytest.raises(CavlogError, match="no lesion-free slices"):
        build_slice_arrays([three_cases / "S1"],
                           PreprocessConfig(resolution=32, slices="central:2"),
                           healthy_only=True, use_cache=False)
    with pytest.raises(CavlogError, match="no cases given"):
        build_slice_arrays([], CFG)


def test_healthy_uses_native_lesion_count_not_the_resized_map():
    flair = np.zeros((64, 64, 4), np.float32)
    flair[8:56, 8:56] = 100.0
    seg = np.zeros(flair.shape, np.uint8)
    seg[30, 30, 2] = 2  # one voxel: gone after shrinking 64 -> 32
    case = case_from_arrays(flair, seg=seg)
    arrays = build_slice_arrays([case], PreprocessConfig(resolution=32, slices="central:4"))
    np.testing.assert_array_equal(arrays.lesion_voxels, [0, 0, 1, 0])
    assert not arrays.lesion.any()
    np.testing.assert_array_equal(healthy(arrays).z, [0, 1, 3])


def test_lesion_free_slices_hand_computed():
    from cavlog_core.data import case_from_arrays, lesion_free_slices

    flair = np.ones((4, 4, 5), np.float32)
    brain = np.zeros((4, 4, 5), bool)
    brain[1:3, 1:3, 1:5] = True  # slice 0 holds no brain
    seg = np.zeros((4, 4, 5), np.uint8)
    seg[1, 1, 3] = 2  # slice 3 holds a lesion voxel
    case = case_from_arrays(flair, seg=seg, brain_mask=brain, case_id="T")
    assert lesion_free_slices(case).tolist() == [False, True, True, False, True]
    healthy = case_from_arrays(flair, brain_mask=brain, case_id="H")
    assert lesion_free_slices(healthy).tolist() == [False, True, True, True, True]
