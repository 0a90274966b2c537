"""One place for the canonical-RAS <-> napari display axis mapping (no Qt).

``cavlog_core`` keeps every volume in canonical RAS order ``(X, Y, Z)`` (see
``docs/ARCHITECTURE.md``). napari slices along the first axis and draws the last two as
(rows, columns), so the plugin shows volumes as ``(Z, Y', X)`` where ``Y' = Y`` reversed:

* the slider walks axial slices from inferior (``z = 0``) to superior;
* rows go from anterior (top) to posterior (bottom), the usual "nose up" axial view;
* columns go from the patient's left to right (neurological convention, ``X`` increases to the
  right in RAS).

Every layer the plugin creates or reads (FLAIR, ground truth, anomaly map, mask) goes through
:func:`to_display`; everything handed back to ``cavlog_core`` goes through :func:`from_display`.
The two are exact inverses (a transpose and a flip: no resampling), so a ground-truth voxel lands
on exactly the FLAIR voxel it labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "from_display",
    "scale_from_spacing",
    "slice_to_display",
    "spacing_from_scale",
    "to_display",
]


def to_display(volume: np.ndarray) -> np.ndarray:
    """Canonical ``(X, Y, Z)`` volume -> contiguous display array ``(Z, Y', X)``.

    Parameters
    ----------
    volume : (X, Y, Z) ndarray
        Canonical RAS volume (any dtype).

    Returns
    -------
    (Z, Y, X) ndarray
        A C-contiguous copy with the ``Y`` axis reversed (anterior at row 0).
    """
    if volume.ndim != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) volume, got shape {volume.shape}")
    return np.ascontiguousarray(volume.transpose(2, 1, 0)[:, ::-1, :])


def from_display(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`: display ``(Z, Y', X)`` -> canonical ``(X, Y, Z)`` copy."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"expected a 3D (Z, Y, X) display array, got shape {array.shape}")
    return np.ascontiguousarray(array[:, ::-1, :].transpose(2, 1, 0))


def slice_to_display(slice_xy: np.ndarray) -> np.ndarray:
    """One axial slice ``(X, Y)`` -> its display plane ``(Y', X)`` (plane ``z`` of the display)."""
    return slice_xy.T[::-1, :]


def scale_from_spacing(spacing: Sequence[float]) -> tuple[float, float, float]:
    """Voxel spacing ``(sx, sy, sz)`` in mm (canonical order) -> napari scale ``(sz, sy, sx)``."""
    sx, sy, sz = (float(s) for s in spacing)
    return (sz, sy, sx)


def spacing_from_scale(scale: Sequence[float]) -> tuple[float, float, float]:
    """Inverse of :func:`scale_from_spacing` (last three entries of a layer scale)."""
    sz, sy, sx = (abs(float(s)) for s in list(scale)[-3:])
    return (sx, sy, sz)
