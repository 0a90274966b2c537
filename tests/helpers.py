"""Plain helpers shared by the tests (no fixtures: those live in conftest.py).

Tiny BraTS-style NIfTI phantoms written with numpy, and a test-double method whose anomaly map
is an affine function of the image (so expected metrics can be computed by hand).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import torch
from torch import nn

from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig
from cavlog_core.methods.base import Method

__all__ = ["CONFIG", "LPS_AFFINE", "RES", "SHARED_DATA", "ImageIsTheMap", "phantom",
           "write_nifti"]

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


RES = 64
CONFIG = RunConfig(preprocess=PreprocessConfig(resolution=RES, mask_erosion=1),
                   model=ModelConfig(resolution=RES, width=0.125))


class ImageIsTheMap(Method):
    """Test double: the anomaly map is an affine function of the image (no ``name``, so the
    registry never sees it)."""

    description: ClassVar[str] = "test double"

    def build(self) -> nn.ModuleDict:
        bn = nn.BatchNorm2d(1)
        bn.running_mean.fill_(0.25)
        bn.running_var.fill_(4.0)
        with torch.no_grad():
            bn.weight.fill_(3.0)
            bn.bias.fill_(-1.0)
        conv = nn.Conv2d(1, 1, 1, bias=False)
        nn.init.ones_(conv.weight)
        return nn.ModuleDict({"model": nn.Sequential(conv, bn)}).eval()

    def training_step(self, modules, optimizers, batch, iteration):  # pragma: no cover
        raise NotImplementedError

    def anomaly_maps(self, modules, images, brain):
        return modules["model"](images)


