"""Bad input gives one line naming the file and the problem (loaders and ``cavlog inspect``)."""

from __future__ import annotations

import gzip
import subprocess
import sys

import numpy as np
import pytest

from cavlog_core import cli
from cavlog_core.data.io import find_cases, load_case
from cavlog_core.errors import CavlogError, InputFileError
from helpers import LPS_AFFINE, phantom, write_nifti

SHAPE = (16, 14, 8)


def _case(root, case_id="BAD", *, flair=None, seg=None, mask=None, affine=LPS_AFFINE,
          seg_affine=None, seg_name=None):
    """Write a case folder; ``flair``/``seg``/``mask`` default to a valid phantom."""
    good_flair, good_seg, _ = phantom(SHAPE)
    folder = root / case_id
    write_nifti(folder / f"{case_id}_flair.nii.gz",
                good_flair.astype(np.int16) if flair is None else flair, affine)
    if seg is not False:
        write_nifti(folder / (seg_name or f"{case_id}_seg.nii.gz"),
                    good_seg if seg is None else seg,
                    affine if seg_affine is None else seg_affine)
    if mask is not None:
        write_nifti(folder / f"{case_id}_brainmask.nii.gz", mask, affine)
    return folder


def _fails(target, culprit, *fragments):
    """load (find + load) ``target``; the one-line message names ``culprit`` and each fragment."""
    with pytest.raises(InputFileError) as info:
        for files in find_cases(target):
            load_case(files)
    message = str(info.value)
    assert "\n" not in message
    assert str(culprit) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_flair_in_case_folder(tmp_path):
    folder = tmp_path / "root" / "NOFLAIR"
    write_nifti(folder / "NOFLAIR_t1.nii.gz", np.ones(SHAPE, np.int16))
    write_nifti(folder / "NOFLAIR_seg.nii.gz", np.zeros(SHAPE, np.uint8))
    _fails(tmp_path / "root", folder, "no FLAIR image", "NOFLAIR_t1.nii.gz")
    _fails(folder, folder, "no FLAIR image")


def test_corrupt_truncated_and_non_nifti_files(tmp_path):
    folder = _case(tmp_path)
    flair = folder / "BAD_flair.nii.gz"
    data = flair.read_bytes()
    flair.write_bytes(data[: len(data) // 2])  # truncated gzip stream
    _fails(folder, flair, "corrupt or truncated")

    flair.write_bytes(np.random.default_rng(0).bytes(2000))  # not gzip at all
    _fails(folder, flair, "not a readable NIfTI file")

    flair.write_bytes(gzip.compress(b"hello, I am a text file" * 30))  # gzip, not NIfTI
    _fails(folder, flair, "not a readable NIfTI file")

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    _fails(text, text, "not a NIfTI file")
    plain = tmp_path / "junk.nii"
    plain.write_bytes(b"\x00" * 400)
    _fails(plain, plain, "not a readable NIfTI file")


def test_2d_and_4d_images(tmp_path):
    img2d = write_nifti(tmp_path / "slice.nii.gz", np.ones((16, 14), np.float32))
    _fails(img2d, img2d, "2D image of shape (16, 14)", "expected a 3D volume")
    img4d = write_nifti(tmp_path / "series.nii.gz", np.ones((*SHAPE, 3), np.float32))
    _fails(img4d, img4d, "4D image of shape (16, 14, 8, 3)")


def test_flair_seg_shape_and_affine_mismatch(tmp_path):
    folder = _case(tmp_path, "SHP", seg=np.zeros((16, 14, 9), np.uint8))
    _fails(folder, folder / "SHP_seg.nii.gz", "shape (16, 14, 9) differs", "(16, 14, 8)")
    moved = LPS_AFFINE.copy()
    moved[0, 3] += 2.0
    folder = _case(tmp_path, "AFF", seg_affine=moved)
    _fails(folder, folder / "AFF_seg.nii.gz", "affine differs", "max difference 2")
    folder = _case(tmp_path, "MSK", mask=np.ones((16, 14, 7), np.uint8))
    _fails(folder, folder / "MSK_brainmask.nii.gz", "shape (16, 14, 7) differs")


def test_nan_inf_voxels(tmp_path):
    flair, _, _ = phantom(SHAPE)
    flair[3, 4, 5] = np.nan
    flair[1, 1, 1] = np.inf
    folder = _case(tmp_path, "NAN", flair=flair)
    _fails(folder, folder / "NAN_flair.nii.gz", "2 NaN/Inf voxel(s)")


def test_empty_brain(tmp_path):
    folder = _case(tmp_path, "ZERO", flair=np.zeros(SHAPE, np.int16), seg=False)
    _fails(folder, folder / "ZERO_flair.nii.gz", "empty brain")
    folder = _case(tmp_path, "EMPTYMASK", mask=np.zeros(SHAPE, np.uint8))
    _fails(folder, folder / "EMPTYMASK_brainmask.nii.gz", "empty brain mask")


def test_unexpected_label_values(tmp_path):
    seg = np.zeros(SHAPE, np.uint8)
    seg[4:6, 4:6, 4] = 3  # 3 is not a BraTS 2017-2021 label
    folder = _case(tmp_path, "LAB", seg=seg)
    _fails(folder, folder / "LAB_seg.nii.gz", "unexpected label value(s) 3", "[0, 1, 2, 4]")
    seg[0, 0, 0] = 4  # 4 is not a BraTS 2023 label (3 is)
    folder = _case(tmp_path, "L23", seg=seg, seg_name="L23-seg.nii.gz")
    _fails(folder, folder / "L23-seg.nii.gz", "unexpected label value(s) 4", "[0, 1, 2, 3]")
    frac = np.zeros(SHAPE, np.float32)
    frac[2, 2, 2] = 0.5
    folder = _case(tmp_path, "FRAC", seg=frac)
    _fails(folder, folder / "FRAC_seg.nii.gz", "non-integer label values")
    mask = np.full(SHAPE, 2, np.uint8)
    folder = _case(tmp_path, "MASK2", mask=mask)
    _fails(folder, folder / "MASK2_brainmask.nii.gz", "unexpected label value(s) 2")


def test_empty_dataset_root_and_missing_path(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(CavlogError, match="no cases found") as info:
        find_cases(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(info.value)
    with pytest.raises(InputFileError, match="no such file or directory"):
        find_cases(tmp_path / "missing")


# ------------------------------------------------------------------------------- CLI
@pytest.fixture
def inspect_only(monkeypatch):
    """The real dispatcher with just this subcommand (other subcommands have their own tests)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("inspect",))
    return cli.main


@pytest.mark.parametrize("problem", ["nan", "labels", "no_flair", "empty_root", "slices"])
def test_inspect_bad_input_exits_2_with_one_line(tmp_path, capsys, inspect_only, problem):
    target, extra = tmp_path, []
    if problem == "nan":
        flair, _, _ = phantom(SHAPE)
        flair[0, 0, 0] = np.nan
        target = _case(tmp_path, "X", flair=flair)
    elif problem == "labels":
        target = _case(tmp_path, "X", seg=np.full(SHAPE, 7, np.uint8))
    elif problem == "no_flair":
        target = tmp_path / "X"
        write_nifti(target / "X_t2.nii.gz", np.ones(SHAPE, np.int16))
    elif problem == "slices":
        target = _case(tmp_path, "X")
        extra = ["--slices", "middle"]
    code = inspect_only(["inspect", str(target), *extra])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cavlog inspect: error: "), err
    assert ("'middle'" if problem == "slices" else str(target)) in lines[0]


def test_inspect_prints_cases_and_summary(tmp_path, capsys, inspect_only):
    _case(tmp_path, "A1")
    _case(tmp_path, "A2", seg=False)
    assert inspect_only(["inspect", str(tmp_path), "--slices", "central:3"]) == 0
    out = capsys.readouterr().out
    assert "A1  (" in out and "A2  (" in out and "labels       : 0, 1, 2, 4" in out
    assert "orientation  : LPS on disk -> RAS" in out and "(3 slices" in out
    assert "summary: 2 cases (1 with ground truth)" in out


def test_inspect_cli_subprocess_exit_code(tmp_path):
    """The real console entry point, once (a fresh interpreter is slow to import torch)."""
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"definitely not gzip")
    run = subprocess.run([sys.executable, "-m", "cavlog_core", "inspect", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "not a readable NIfTI" in lines[0]


def test_inspect_prints_lesion_share_and_area_per_slice(tmp_path, capsys, inspect_only):
    flair, seg, _ = phantom(SHAPE)
    seg = np.zeros(SHAPE, np.uint8)
    cx, cy = SHAPE[0] // 2, SHAPE[1] // 2
    seg[cx - 2:cx + 2, cy - 2:cy + 3, :] = 2  # 4 x 5 voxels of 2 x 1 mm on every slice
    _case(tmp_path, "L1", flair=flair.astype(np.int16), seg=seg,
          affine=np.diag([2.0, 1.0, 1.0, 1.0]))
    assert inspect_only(["inspect", str(tmp_path / "L1"), "--slices", "central:3", "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)["cases"][0]
    assert info["lesion_area_mm2"] == [40.0, 40.0, 40.0]
    assert inspect_only(["inspect", str(tmp_path), "--slices", "central:3"]) == 0
    out = capsys.readouterr().out
    assert "lesion area  : 40 / 40 / 40 mm² per selected slice" in out
