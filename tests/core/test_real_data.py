"""The real BraTS cases in ``../shared/data`` (skipped when the folder is absent)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from cavlog_core.config import PreprocessConfig
from cavlog_core.data.brainmask import compute_brain_mask
from cavlog_core.data.io import find_cases, load_case, save_like
from cavlog_core.data.preprocess import prepare_slices, select_slices
from cavlog_core.data.splits import keep_for_evaluation
from helpers import SHARED_DATA

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (SHARED_DATA / "brats2013").is_dir(),
                       reason=f"real BraTS cases not found at {SHARED_DATA}"),
]

BRATS2013 = ("BraTS2013_HG_0004", "BraTS2013_HG_0005", "BraTS2013_HG_0006")


@pytest.fixture(scope="module")
def cases():
    """The three BraTS 2013 cases, loaded once."""
    files = find_cases(SHARED_DATA / "brats2013")
    assert [f.case_id for f in files] == list(BRATS2013)
    return [load_case(f) for f in files]


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_brats2013_shape_labels_and_orientation(cases):
    for case in cases:
        assert case.shape == (240, 240, 155) and case.spacing == (1.0, 1.0, 1.0)
        assert case.flair.dtype == np.float32 and case.seg.dtype == np.uint8
        assert set(np.unique(case.seg)) <= {0, 1, 2, 4} and (case.seg > 0).any()
        assert case.geometry.axcodes == ("L", "P", "S")
        assert nib.aff2axcodes(case.affine) == ("R", "A", "S")
    canon = nib.as_closest_canonical(nib.load(cases[0].source_path))
    np.testing.assert_array_equal(cases[0].flair, np.asarray(canon.dataobj))


def test_provided_brain_mask_covers_the_brain(cases):
    for case in cases:
        computed = compute_brain_mask(case.flair)  # z-scored: constant negative background
        assert _dice(computed, case.brain_mask) > 0.9
        # every voxel above the background lies in the provided mask, and so does the tumour
        above = case.flair > case.flair.min()
        assert np.count_nonzero(above & case.brain_mask) / np.count_nonzero(above) > 0.99
        tumour = case.seg > 0
        assert np.count_nonzero(tumour & case.brain_mask) / np.count_nonzero(tumour) > 0.99
        assert 0.8e6 < np.count_nonzero(case.brain_mask) < 2.0e6  # ~1-2 litres at 1 mm³


def test_brats2013_slices_and_evaluation_rules(cases):
    cfg = PreprocessConfig()
    for case in cases:
        batch = prepare_slices(case, cfg)
        assert batch.images.shape == (10, 1, 224, 224) and batch.lesion.any()
        z = select_slices(case.brain_mask, "central:10")
        assert keep_for_evaluation(case, z)  # tumours span the central slices


def test_brats2023_t2f_without_seg(tmp_path):
    folder = SHARED_DATA / "brats2023-no-seg" / "BraTS-GLI-00001-000"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    (files,) = find_cases(folder)
    assert files.flair.name.endswith("-t2f.nii.gz") and files.seg is None
    case = load_case(files)
    assert case.shape == (240, 240, 155) and case.seg is None
    assert 0.8e6 < np.count_nonzero(case.brain_mask) < 2.5e6  # raw int16, background 0
    assert (case.flair[~case.brain_mask] == 0).mean() > 0.99
    batch = prepare_slices(case, PreprocessConfig(resolution=128))
    assert batch.lesion is None and batch.images.shape == (10, 1, 128, 128)
    # written back in the file's own (LPS) geometry, voxel by voxel
    out = save_like(case.brain_mask, case, tmp_path / "mask.nii.gz")
    original = np.asarray(nib.load(files.flair).dataobj)
    written = nib.load(out)
    np.testing.assert_array_equal(written.affine, nib.load(files.flair).affine)
    np.testing.assert_array_equal(np.asarray(written.dataobj) > 0,
                                  compute_brain_mask(original.astype(np.float32)))
