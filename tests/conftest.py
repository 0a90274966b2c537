"""Shared fixtures: tiny BraTS-style NIfTI cases written with numpy into ``tmp_path``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# napari settings (the plugin sets its reader preference) go to a throw-away file, never to the
# user's own napari configuration.
os.environ.setdefault("NAPARI_CONFIG", str(Path(tempfile.mkdtemp(prefix="napari-cfg-")) /
                                           "settings.yaml"))

#: BraTS files are stored LPS: x and y flipped with respect to RAS.
LPS_AFFINE = np.array([[-1.0, 0, 0, 0], [0, -1.0, 0, 239.0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
#: Real BraTS cases, read-only; tests using them skip when the folder is absent.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``data`` as NIfTI (format from the suffix), stored dtype = ``data.dtype``."""
    img = nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine)
    img.set_data_dtype(np.asarray(data).dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def phantom(shape=(24, 20, 12), *, seed=0, lesion=True, background=0.0):
    """A small skull-stripped 'brain': ellipsoid, dark ventricle inside, optional lesion.

    Returns ``(flair float32, seg uint8, brain bool)`` in the array's own voxel order.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    r2 = sum(g**2 / a**2 for g, a in zip(grids, (0.85, 0.85, 0.9)))
    brain = r2 < 1
    flair = np.where(brain, 300.0 + 20 * rng.standard_normal(shape), 0.0)
    ventricle = sum(g**2 / a**2 for g, a in zip(grids, (0.15, 0.3, 0.3))) < 1
    flair[ventricle] = 60.0
    seg = np.zeros(shape, np.uint8)
    if lesion:
        c = (0.35, 0.1, 0.0)
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c))
        seg[(d2 < 0.09) & brain] = 2
        seg[(d2 < 0.03) & brain] = 1
        seg[(d2 < 0.05) & (d2 >= 0.03) & brain] = 4
        flair[seg > 0] = 600.0
    flair = np.where(brain, flair, background).astype(np.float32)
    return flair, seg, brain


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
