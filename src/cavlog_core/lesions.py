"""Lesions as a clinician counts them: 3-D connected components of a mask, in millilitres.

A mask (``map >= threshold`` inside the brain) becomes a table of lesions: 26-connected components
of at least ``min_volume_ml``, each with its volume in mL (voxel count x voxel volume), centroid
(voxel indices and world millimetres), maximum map value and the axial slices it spans.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ._atomic import atomic_write_text
from .errors import CavlogError

__all__ = [
    "DEFAULT_MIN_LESION_ML",
    "HEALTHY_COMPONENT_QUANTILE",
    "MIN_LESION_KEY",
    "Lesion",
    "LesionTable",
    "find_lesions",
    "healthy_component_volume",
    "min_lesion_ml",
    "write_lesions_csv",
]


@dataclass(frozen=True)
class Lesion:
    """One connected lesion (canonical RAS voxel indices ``(x, y, z)``)."""

    label: int
    voxels: int
    volume_ml: float
    centroid_voxel: tuple[float, float, float]
    centroid_mm: tuple[float, float, float]
    max_score: float
    z_first: int
    z_last: int


@dataclass(frozen=True)
class LesionTable:
    """:func:`find_lesions`'s result: lesions by decreasing volume and what was left out."""

    lesions: tuple[Lesion, ...]
    total_ml: float
    min_volume_ml: float
    removed: int

    def to_csv(self) -> str:
        """One row per lesion (``volume_ml`` column), header first."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["lesion", "volume_ml", "voxels", "centroid_x_mm", "centroid_y_mm",
                         "centroid_z_mm", "centroid_i", "centroid_j", "centroid_k", "max_score",
                         "slice_first", "slice_last"])
        for les in self.lesions:
            writer.writerow([les.label, f"{les.volume_ml:.4f}", les.voxels,
                             *(f"{v:.2f}" for v in les.centroid_mm),
                             *(f"{v:.2f}" for v in les.centroid_voxel),
                             f"{les.max_score:.4f}", les.z_first, les.z_last])
        return buf.getvalue()

    def as_dicts(self) -> list[dict]:
        """One plain dict per lesion (the CSV columns)."""
        return [asdict(les) for les in self.lesions]


def find_lesions(mask: np.ndarray, *, affine: np.ndarray, scores: np.ndarray | None = None,
                 min_volume_ml: float = 0.0) -> LesionTable:
    """Find the connected lesions of a binary mask.

    Parameters
    ----------
    mask : (X, Y, Z) bool ndarray
        Canonical (RAS) lesion mask.
    affine : (4, 4) ndarray
        Canonical voxel-to-world affine (mm); the voxel volume is ``|det(affine[:3, :3])|``.
    scores : (X, Y, Z) ndarray, optional
        The anomaly map, for each lesion's ``max_score`` (NaN when absent).
    min_volume_ml : float
        Components smaller than this are dropped (counted in ``removed``).

    Returns
    -------
    LesionTable
        Lesions sorted by decreasing volume, labelled 1, 2, ... in that order.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise CavlogError(f"find_lesions: expected a 3D mask, got shape {mask.shape}")
    if min_volume_ml < 0 or not np.isfinite(min_volume_ml):
        raise CavlogError(f"min_volume_ml={min_volume_ml}: must be a number >= 0")
    affine = np.asarray(affine, dtype=np.float64)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return LesionTable((), 0.0, float(min_volume_ml), 0)
    # Statistics over the labelled voxels only (a few % of the volume), with bincount and
    # ufunc.at: scipy's per-label maximum sorts the whole volume (seconds at 240x240x155).
    flat = np.flatnonzero(labels)
    lab = labels.ravel()[flat]
    counts = np.bincount(lab, minlength=n + 1)
    coords = np.unravel_index(flat, labels.shape)
    sums = [np.bincount(lab, weights=c, minlength=n + 1) for c in coords]
    maxima = np.full(n + 1, np.nan)
    if scores is not None:
        maxima[:] = -np.inf
        np.maximum.at(maxima, lab, np.asarray(scores).ravel()[flat].astype(np.float64))
    z_first = np.full(n + 1, np.iinfo(np.int64).max)
    z_last = np.full(n + 1, -1)
    np.minimum.at(z_first, lab, coords[2])
    np.maximum.at(z_last, lab, coords[2])
    keep = np.flatnonzero(counts * voxel_ml >= min_volume_ml)
    keep = keep[keep > 0]
    found = []
    for k in keep:
        c = tuple(float(s_[k] / counts[k]) for s_ in sums)
        world = affine @ np.array([*c, 1.0])
        found.append((int(counts[k]), c, world[:3], float(maxima[k]), int(z_first[k]),
                      int(z_last[k])))
    found.sort(key=lambda f: -f[0])
    lesions = tuple(
        Lesion(label=i + 1, voxels=v, volume_ml=v * voxel_ml,
               centroid_voxel=tuple(float(x) for x in c),  # type: ignore[arg-type]
               centroid_mm=tuple(float(x) for x in w),  # type: ignore[arg-type]
               max_score=mx, z_first=int(z0), z_last=int(z1))
        for i, (v, c, w, mx, z0, z1) in enumerate(found))
    return LesionTable(lesions, float(sum(les.volume_ml for les in lesions)),
                       float(min_volume_ml), int(n - len(lesions)))


#: Where the healthy-data minimum lesion volume is stored: ``checkpoint.meta["extra"][KEY]``.
MIN_LESION_KEY = "min_lesion_ml"
#: The fallback when a checkpoint has none (about 50 voxels of 1 mm³).
DEFAULT_MIN_LESION_ML = 0.05
#: The rule: the volume below which this share of the false-positive components found on
#: healthy tissue (at ``healthy_fpr5``) lie.
HEALTHY_COMPONENT_QUANTILE = 0.95


def min_lesion_ml(meta: dict | None) -> float:
    """Return the minimum lesion volume of a checkpoint (``meta["extra"]``), else the default."""
    value = ((meta or {}).get("extra") or {}).get(MIN_LESION_KEY)
    if value is None:
        return DEFAULT_MIN_LESION_ML
    try:
        value = float(value)
    except (TypeError, ValueError):
        return DEFAULT_MIN_LESION_ML
    return value if np.isfinite(value) and value >= 0 else DEFAULT_MIN_LESION_ML


def healthy_component_volume(volumes_ml: list[float],
                             quantile: float = HEALTHY_COMPONENT_QUANTILE) -> float:
    """Return the ``quantile`` of the volumes of components found on healthy tissue (0 when none).

    With it as the minimum lesion volume, that share of the spurious detections on healthy
    scans is not listed as a lesion.
    """
    if not volumes_ml:
        return 0.0
    return float(np.quantile(np.asarray(volumes_ml, dtype=np.float64), quantile))


def write_lesions_csv(table: LesionTable, path: str | Path) -> Path:
    """Write :meth:`LesionTable.to_csv` atomically."""
    path = Path(path)
    atomic_write_text(path, table.to_csv())
    return path
