"""napari writers: image and labels layers -> ``.nii.gz`` in the source scan's geometry (no Qt).

Layers opened or computed by the plugin carry the original NIfTI geometry in
``metadata["cavlog"]["geometry"]``; the display array is mapped back to canonical RAS
(:func:`napari_cavlog._orient.from_display`) and ``cavlog_core.data.io.save_like`` restores the
original orientation, affine and header, writing atomically. Layers from elsewhere are written
in canonical RAS with a diagonal affine built from the layer scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._orient import from_display, spacing_from_scale

__all__ = ["write_image", "write_labels"]


def _nifti_path(path: str | Path) -> Path:
    p = Path(path)
    return p if p.name.lower().endswith((".nii", ".nii.gz")) else p.with_name(p.name + ".nii.gz")


def _labels_dtype(array: np.ndarray) -> np.dtype:
    if array.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(array.min()), int(array.max())
    for dtype in (np.uint8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _write(path: str | Path, data: Any, meta: dict[str, Any], dtype: np.dtype) -> list[str]:
    from cavlog_core.errors import CavlogError

    out = _nifti_path(path)
    array = np.asarray(data)
    if array.ndim != 3:
        raise CavlogError(f"{out}: only 3D layers can be saved as NIfTI (shape {array.shape})")
    canonical = from_display(array).astype(dtype, copy=False)
    info = (meta.get("metadata") or {}).get("cavlog", {})
    geometry = info.get("geometry")
    if geometry is not None and tuple(geometry.canonical_shape) == canonical.shape:
        from cavlog_core.data.io import save_like

        save_like(canonical, geometry, out)
    else:
        import nibabel as nib

        from cavlog_core._atomic import atomic_path

        affine = info.get("affine")
        if affine is None:
            affine = np.diag([*spacing_from_scale(meta.get("scale") or (1.0, 1.0, 1.0)), 1.0])
        with atomic_path(out) as tmp:
            nib.save(nib.Nifti1Image(canonical, np.asarray(affine, dtype=np.float64)), tmp)
    return [str(out)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for image layers (float32 NIfTI)."""
    return _write(path, data, meta, np.dtype(np.float32))


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """npe2 single-layer writer for labels layers (smallest integer type holding the labels)."""
    array = np.asarray(data)
    return _write(path, array, meta, _labels_dtype(array))
