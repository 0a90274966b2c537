"""Finding, loading (canonical RAS), brain masks and writing back in the original geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from cavlog_core.data.brainmask import compute_brain_mask, fill_holes_axial
from cavlog_core.data.io import (
    CaseFiles,
    c_order,
    case_from_arrays,
    find_cases,
    load_case,
    save_like,
)
from cavlog_core.errors import CavlogError
from helpers import LPS_AFFINE, phantom, write_nifti

# A permuted, flipped, anisotropic affine: array axes (i, j, k) are (A->P, S, L->R... ) etc.
PERMUTED = np.array([[0.0, 0, -3.0, 50], [2.0, 0, 0, -20], [0, -1.5, 0, 10], [0, 0, 0, 1]])


# ------------------------------------------------------------------------------- c_order
@pytest.mark.parametrize(("dtype", "target"), [(np.int16, np.float32), (np.uint8, None),
                                               (np.float32, None), (np.uint16, np.float32)])
def test_c_order_equals_numpy_on_fortran_flipped_and_strided_views(dtype, target):
    rng = np.random.default_rng(0)
    vol = np.asfortranarray((rng.random((7, 6, 5)) * 100).astype(dtype))  # as nibabel returns
    views = [vol, vol[::-1], vol[:, ::-1, ::-1], vol.transpose(2, 0, 1)[::-1], vol[::2]]
    for view in views:
        expected = np.ascontiguousarray(view, dtype=target)
        got = c_order(view, target)
        assert got.flags.c_contiguous and got.dtype == expected.dtype
        assert np.array_equal(got, expected)
    same = np.zeros((3, 4), np.float32)
    assert c_order(same) is same  # already C-ordered: no copy


def test_from_canonical_fortran_order_has_the_same_values(tmp_path, make_case):
    case = load_case(make_case("F_001", root=tmp_path))
    values = np.arange(np.prod(case.shape), dtype=np.float32).reshape(case.shape)
    c, f = case.geometry.from_canonical(values), case.geometry.from_canonical(values, order="F")
    assert c.flags.c_contiguous and f.flags.f_contiguous and np.array_equal(c, f)
    with pytest.raises(ValueError, match="order='X'"):
        case.geometry.from_canonical(values, order="X")


# ------------------------------------------------------------------------------- find_cases
def test_find_cases_layouts_sorted_and_other_modalities_ignored(tmp_path, make_case):
    root = tmp_path / "data"
    make_case("B_002", root=root / "LGG", brainmask=True)  # nested like BraTS'19 HGG/LGG
    make_case("A_001", root=root / "HGG", seg=False)
    make_case("BraTS-GLI-00001-000", root=root, style="2023", ext=".nii")
    write_nifti(root / "HGG" / "A_001" / "A_001_t1.nii.gz", np.zeros((4, 4, 4), np.int16))
    (root / ".cavlog_cache").mkdir()
    write_nifti(root / ".cavlog_cache" / "Z_flair.nii.gz", np.zeros((4, 4, 4), np.int16))

    cases = find_cases(root)
    assert [c.case_id for c in cases] == ["A_001", "B_002", "BraTS-GLI-00001-000"]
    a, b, g = cases
    assert a.flair.name == "A_001_flair.nii.gz" and a.seg is None and a.brain_mask is None
    assert a.path == root / "HGG" / "A_001"
    assert b.seg.name == "B_002_seg.nii.gz" and b.brain_mask.name == "B_002_brainmask.nii.gz"
    assert g.flair.name == "BraTS-GLI-00001-000-t2f.nii" and g.seg.name.endswith("-seg.nii")


def test_find_cases_case_folder_and_single_file(make_case):
    folder = make_case("C_7")
    (only,) = find_cases(folder)
    assert only.case_id == "C_7" and only.path == folder
    # A FLAIR file given directly brings its seg along; any other NIfTI is a bare FLAIR.
    (direct,) = find_cases(folder / "C_7_flair.nii.gz")
    assert direct.path == folder / "C_7_flair.nii.gz" and direct.seg == folder / "C_7_seg.nii.gz"
    other = write_nifti(folder.parent / "scan.nii.gz", np.ones((5, 5, 5), np.float32))
    assert find_cases(other) == [CaseFiles("scan", other, other)]


# ------------------------------------------------------------------------------- load_case
def test_load_case_is_canonical_ras_like_nibabel(make_case):
    folder = make_case("LPS", brainmask=True)  # stored LPS, as BraTS
    case = load_case(folder)
    img = nib.load(folder / "LPS_flair.nii.gz")
    canon = nib.as_closest_canonical(img)
    np.testing.assert_array_equal(case.flair, canon.get_fdata().astype(np.float32))
    np.testing.assert_allclose(case.affine, canon.affine)
    assert case.geometry.axcodes == ("L", "P", "S")
    assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    raw = np.asarray(img.dataobj)
    np.testing.assert_array_equal(case.flair, raw[::-1, ::-1, :])  # LPS -> RAS flips x and y
    seg_raw = np.asarray(nib.load(folder / "LPS_seg.nii.gz").dataobj)
    np.testing.assert_array_equal(case.seg, seg_raw[::-1, ::-1, :])
    assert case.seg.dtype == np.uint8 and set(np.unique(case.seg)) == {0, 1, 2, 4}
    assert case.brain_mask.dtype == bool and case.flair.dtype == np.float32
    assert case.flair.flags.c_contiguous and case.source_path == folder / "LPS_flair.nii.gz"


def test_permuted_affine_spacing_and_orientation(tmp_path):
    flair, seg, _ = phantom((10, 14, 8))
    write_nifti(tmp_path / "P" / "P_flair.nii.gz", flair, PERMUTED)
    write_nifti(tmp_path / "P" / "P_seg.nii.gz", seg, PERMUTED)
    case = load_case(tmp_path / "P")
    canon = nib.as_closest_canonical(nib.load(tmp_path / "P" / "P_flair.nii.gz"))
    np.testing.assert_array_equal(case.flair, canon.get_fdata().astype(np.float32))
    np.testing.assert_allclose(case.affine, canon.affine)
    # Axis k (3 mm, x) -> R, axis i (2 mm, y) -> A, axis j (1.5 mm, z) -> S.
    assert case.shape == (8, 10, 14) and case.spacing == (3.0, 2.0, 1.5)


def test_4d_with_trailing_singleton_is_squeezed(tmp_path):
    flair, _, _ = phantom((12, 12, 6), lesion=False)
    path = write_nifti(tmp_path / "v.nii.gz", flair[..., None])
    case = load_case(path)
    assert case.shape == (12, 12, 6) and case.seg is None and case.case_id == "v"


def test_brain_mask_file_is_used_and_computed_mask_matches(make_case):
    with_file = load_case(make_case("M1", brainmask=True))
    computed = load_case(make_case("M2", brainmask=False))
    np.testing.assert_array_equal(with_file.brain_mask, computed.brain_mask)
    assert with_file.brain_mask.sum() > 0


# ------------------------------------------------------------------------------- save_like
@pytest.mark.parametrize("affine", [LPS_AFFINE, PERMUTED], ids=["LPS", "permuted"])
def test_save_like_round_trip_voxel_by_voxel(tmp_path, affine):
    flair, seg, _ = phantom((10, 14, 8))
    src = write_nifti(tmp_path / "in" / "X_flair.nii.gz", flair, affine)
    write_nifti(tmp_path / "in" / "X_seg.nii.gz", seg, affine)
    case = load_case(tmp_path / "in")

    out = save_like(case.flair * 0.5, case, tmp_path / "out" / "map.nii.gz")
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, nib.load(src).affine)
    assert back.get_data_dtype() == np.float32 and back.shape == flair.shape
    np.testing.assert_array_equal(np.asarray(back.dataobj), flair * np.float32(0.5))

    mask = save_like(case.seg > 0, case.geometry, tmp_path / "out" / "mask.nii")
    back = nib.load(mask)
    assert back.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(back.dataobj), (seg > 0).astype(np.uint8))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["map.nii.gz", "mask.nii"]


def test_save_like_rejects_wrong_shape_and_suffix(tmp_path, make_case):
    case = load_case(make_case())
    with pytest.raises(CavlogError, match=r"array shape \(3, 3, 3\) differs"):
        save_like(np.zeros((3, 3, 3), np.float32), case, tmp_path / "o.nii.gz")
    with pytest.raises(CavlogError, match=r"must end in \.nii"):
        save_like(case.flair, case, tmp_path / "o.png")


def test_case_from_arrays_equals_loading_the_same_file(tmp_path):
    flair, seg, _ = phantom((10, 14, 8))
    write_nifti(tmp_path / "F" / "F_flair.nii.gz", flair, PERMUTED)
    write_nifti(tmp_path / "F" / "F_seg.nii.gz", seg, PERMUTED)
    loaded = load_case(tmp_path / "F")
    built = case_from_arrays(flair, seg=seg, affine=PERMUTED, case_id="F")
    for name in ("flair", "seg", "brain_mask", "affine"):
        np.testing.assert_array_equal(getattr(built, name), getattr(loaded, name))
    assert built.source_path is None and built.spacing == loaded.spacing
    plain = case_from_arrays(flair)  # identity affine: already RAS, untouched
    np.testing.assert_array_equal(plain.flair, flair)
    with pytest.raises(CavlogError, match=r"myscan: seg shape \(2, 2, 2\) differs"):
        case_from_arrays(flair, seg=np.zeros((2, 2, 2)), case_id="myscan")


# ------------------------------------------------------------------------------- brain mask
def test_brain_mask_raw_and_zscored_background():
    flair, _, brain = phantom((30, 26, 16), lesion=False)
    flair[8:12, 10:14, 6:10] = 0.0  # a dark cavity at the background value: must be filled
    flair[0, 0, 0] = 50.0  # an isolated speck outside: not the largest component
    raw = compute_brain_mask(flair)
    np.testing.assert_array_equal(raw, brain)
    # z-scored copy: background is a constant negative value, not 0
    z = np.where(brain, (flair - 300.0) / 20.0, 0.0).astype(np.float32)
    z[~brain] = z.min() - 1.5
    z[0, 0, 0] = 0.0
    z[8:12, 10:14, 6:10] = z.min()
    np.testing.assert_array_equal(compute_brain_mask(z), brain)
    assert not compute_brain_mask(np.full((5, 5, 5), -2.0, np.float32)).any()


def test_fill_holes_axial_matches_scipy_slice_by_slice():
    rng = np.random.default_rng(3)
    mask = ndimage.binary_opening(rng.random((20, 18, 5)) < 0.6)
    expected = np.stack([ndimage.binary_fill_holes(mask[:, :, k]) for k in range(5)], axis=-1)
    np.testing.assert_array_equal(fill_holes_axial(mask), expected)


def test_brain_mask_noisy_background_uses_otsu():
    rng = np.random.default_rng(0)
    grids = np.meshgrid(*(np.linspace(-1, 1, s) for s in (40, 40, 20)), indexing="ij")
    brain = sum(g**2 for g in grids) < 0.7
    noisy = np.where(brain, 300.0, 5.0) + rng.normal(0, 3, brain.shape)  # no constant value
    np.testing.assert_array_equal(compute_brain_mask(noisy), brain)


def test_iter_loaded_cases_prefetches_in_order_and_raises_in_place(make_case, tmp_path):
    from cavlog_core.data.io import iter_loaded_cases

    root = tmp_path / "data"
    for i in range(3):
        make_case(f"C{i}", root=root, seed=i)
    (root / "C1" / "C1_flair.nii.gz").write_bytes(b"not a NIfTI file")  # the middle one is bad
    files = find_cases(root)
    seen = []
    with pytest.raises(CavlogError, match="C1_flair"):
        for case in iter_loaded_cases(files):
            seen.append(case.case_id)
    assert seen == ["C0"]  # the cases before the bad one were yielded, in order
    make_case("C1", root=root, seed=1)
    for prefetch in (True, False):
        got = list(iter_loaded_cases(find_cases(root), prefetch=prefetch))
        assert [c.case_id for c in got] == ["C0", "C1", "C2"]
        np.testing.assert_array_equal(got[2].flair, load_case(root / "C2").flair)
