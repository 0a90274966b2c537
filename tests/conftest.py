"""Shared fixtures: tiny BraTS-style NIfTI cases written with numpy into ``tmp_path``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from helpers import LPS_AFFINE, phantom, write_nifti

# napari settings (the plugin sets its reader preference) go to a throw-away file, never to the
# user's own napari configuration.
os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="napari-cfg-")) /
                                           "settings.yaml"))

@pytest.fixture
def make_case(tmp_path):
    """Factory writing one case folder; returns its path.

    ``make_case(case_id, style="2019"|"2023", seg=True, brainmask=False, lesion=True,
    affine=LPS_AFFINE, ext=".nii.gz", shape=(24, 20, 12), root=tmp_path, seed=0,
    dtype=np.int16)``; arrays are the :func:`phantom` in the file's voxel order.
    """

    def factory(case_id="CASE_001", *, style="2019", seg=True, brainmask=False, lesion=True,
                affine=LPS_AFFINE, ext=".nii.gz", shape=(24, 20, 12), root=None, seed=0,
                dtype=np.int16):
        folder = Path(root or tmp_path) / case_id
        flair, labels, brain = phantom(shape, seed=seed, lesion=lesion)
        sep, flair_name = ("_", "flair") if style == "2019" else ("-", "t2f")
        write_nifti(folder / f"{case_id}{sep}{flair_name}{ext}", flair.astype(dtype), affine)
        if seg:
            if style == "2023":
                labels = np.where(labels == 4, 3, labels).astype(np.uint8)
            write_nifti(folder / f"{case_id}{sep}seg{ext}", labels, affine)
        if brainmask:
            write_nifti(folder / f"{case_id}{sep}brainmask{ext}", brain.astype(np.uint8), affine)
        return folder

    return factory
