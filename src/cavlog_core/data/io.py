"""Finding, loading, validating and writing BraTS-style NIfTI cases.

Every volume is returned in canonical RAS orientation (``nib.as_closest_canonical`` equivalent,
so the axial slice ``z`` is ``vol[:, :, z]``). The orientation transform is kept in
:class:`NiftiGeometry` so any array computed on the canonical grid can be written back in the
original file's voxel order, affine and header (:func:`save_like`).

Supported layouts (ground truth and brain mask always optional):

- BraTS 2019-2021: ``<ID>/<ID>_flair.nii.gz``, ``<ID>_seg.nii.gz``, ``<ID>_brainmask.nii.gz``;
- BraTS 2023+: ``<ID>/<ID>-t2f.nii.gz``, ``<ID>-seg.nii.gz``;
- ``.nii`` or ``.nii.gz``; other modalities (t1, t1ce, t2, ...) are ignored;
- a dataset root (case folders, possibly grouped one or two levels deep as in BraTS'19
  ``HGG/`` and ``LGG/``), a single case folder, or a single NIfTI file.
"""

from __future__ import annotations

import gzip
import os
import re
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from nibabel import orientations as ornt

from .._atomic import atomic_path
from ..errors import CavlogError, InputFileError
from .brainmask import compute_brain_mask

__all__ = [
    "Case",
    "CaseFiles",
    "NiftiGeometry",
    "c_order",
    "case_from_arrays",
    "find_cases",
    "iter_loaded_cases",
    "load_case",
    "save_like",
    "torch_view",
]

#: File-name roles. FLAIR is ``flair`` (BraTS <= 2021) or ``t2f`` (BraTS 2023+).
FLAIR_ROLES = ("flair", "t2f")
SEG_ROLES = ("seg",)
MASK_ROLES = ("brainmask",)
#: Other BraTS modalities: recognised (so a folder holding only these is reported as a case
#: without FLAIR) but never read.
OTHER_ROLES = ("t1", "t1ce", "t2", "t1c", "t1n", "t2w")
#: Label sets accepted in ground truth: BraTS 2017-2021 (4 = enhancing) and BraTS 2023+
#: (3 = enhancing). Binary {0, 1} masks are a subset of both and are kept as they are.
LABELS_2017 = frozenset({0, 1, 2, 4})
LABELS_2023 = frozenset({0, 1, 2, 3})

_NIFTI_RE = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_ROLE_RE = re.compile(r"^(?P<id>.+)[_-](?P<role>[A-Za-z0-9]+)$")
_MAX_DEPTH = 3  # root/ (HGG/) ID/ files: deep enough for every BraTS release
_RAS = ornt.axcodes2ornt(("R", "A", "S"))
_AFFINE_ATOL = 1e-3  # mm; BraTS seg/FLAIR affines agree to float32 precision
#: Largest volume a header may claim (voxels): 1024 x 1024 x 256, 1 GiB as float32. A claim is
#: checked before any voxel is read, so a tiny file with a hostile header cannot force a huge
#: allocation; the volume must also fit in a quarter of the available memory (x 3 copies).
MAX_VOXELS = 1 << 28
#: Voxel sizes outside this range (mm) are suspicious (a wrong unit, a corrupt header).
SPACING_RANGE_MM = (0.1, 10.0)


_TORCH_DTYPES = {np.dtype(k): v for k, v in (
    (np.float32, torch.float32), (np.float64, torch.float64), (np.int16, torch.int16),
    (np.int32, torch.int32), (np.uint8, torch.uint8), (np.bool_, torch.bool))}


def torch_view(array: np.ndarray) -> torch.Tensor | None:
    """``torch.from_numpy(array)`` (shared memory) where torch can view it, else None.

    None for dtypes torch lacks, read-only arrays (torch warns on them) and negative strides
    (flipped views, which torch refuses): the caller then takes its numpy path.
    """
    if array.dtype not in _TORCH_DTYPES or not array.flags.writeable or array.ndim == 0 \
            or min(array.strides) < 0:
        return None
    return torch.from_numpy(array)


def c_order(array: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
    """``np.ascontiguousarray(array, dtype)``, with torch's faster copy where it applies.

    NIfTI volumes arrive in Fortran order, often flipped (LPS files): making them C-contiguous is
    a strided 3D transpose, which torch does ~1.7x faster than numpy on these volumes. Values are
    the same bit for bit; dtypes torch lacks, and read-only arrays, take numpy's path.
    """
    target = np.dtype(dtype) if dtype is not None else array.dtype
    if array.flags.c_contiguous and array.dtype == target:
        return array
    flipped = tuple(i for i, step in enumerate(array.strides) if step < 0)
    t = torch_view(np.flip(array, flipped) if flipped else array)
    if t is None or target not in _TORCH_DTYPES:
        return np.ascontiguousarray(array, dtype=target)
    t = t.contiguous()
    if flipped:
        t = t.flip(flipped)  # a C-contiguous copy of a C-contiguous tensor
    return t.to(_TORCH_DTYPES[target]).numpy()


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CaseFiles:
    """The files of one case, found by :func:`find_cases`.

    Attributes
    ----------
    case_id : str
        BraTS identifier (``BraTS19_2013_10_1``, ``BraTS-GLI-00001-000``) or the file stem.
    path : Path
        The case folder, or the NIfTI file when a single file was given.
    flair : Path
        FLAIR image (``_flair`` or ``-t2f``).
    seg, brain_mask : Path or None
        Ground-truth labels and brain mask when present.
    """

    case_id: str
    path: Path
    flair: Path
    seg: Path | None = None
    brain_mask: Path | None = None

    def files(self) -> tuple[Path, ...]:
        """Every file of the case that is read (FLAIR first)."""
        return tuple(p for p in (self.flair, self.seg, self.brain_mask) if p is not None)


@dataclass(frozen=True, eq=False)
class NiftiGeometry:
    """How the canonical RAS array maps back to the original file.

    Attributes
    ----------
    affine : (4, 4) ndarray
        Original voxel-to-world affine.
    shape : tuple of 3 int
        Original (spatial) array shape.
    transform : (3, 2) ndarray
        ``nibabel.orientations`` transform from the original axes to RAS.
    header : nibabel header or None
        Copy of the original header (units, descriptions, qform/sform codes) reused on write.
    """

    affine: np.ndarray
    shape: tuple[int, int, int]
    transform: np.ndarray
    header: nib.Nifti1Header | None = field(default=None, repr=False)

    @classmethod
    def from_affine(cls, affine: np.ndarray, shape: tuple[int, ...],
                    header: nib.Nifti1Header | None = None) -> NiftiGeometry:
        """Geometry of an array of ``shape`` (original voxel order) with ``affine``."""
        affine = np.asarray(affine, dtype=np.float64)
        transform = ornt.ornt_transform(ornt.io_orientation(affine), _RAS)
        return cls(affine=affine, shape=tuple(int(s) for s in shape[:3]),  # type: ignore[arg-type]
                   transform=transform, header=header)

    @property
    def axcodes(self) -> tuple[str, str, str]:
        """Orientation codes of the original file, e.g. ``('L', 'P', 'S')`` for BraTS."""
        return tuple(ornt.aff2axcodes(self.affine))  # type: ignore[return-value]

    @property
    def canonical_affine(self) -> np.ndarray:
        """Affine of the canonical (RAS) array."""
        return self.affine @ ornt.inv_ornt_aff(self.transform, self.shape)

    @property
    def canonical_shape(self) -> tuple[int, int, int]:
        """Shape of the canonical array."""
        return tuple(self.shape[int(i)] for i in np.argsort(self.transform[:, 0]))  # type: ignore

    def to_canonical(self, array: np.ndarray, dtype: np.dtype | type | None = None) -> np.ndarray:
        """Original voxel order -> canonical RAS, as a C-contiguous array of ``dtype``."""
        return c_order(ornt.apply_orientation(array, self.transform), dtype)

    def from_canonical(self, array: np.ndarray, *, order: str = "C") -> np.ndarray:
        """Canonical RAS -> original voxel order: the exact inverse of :meth:`to_canonical`.

        ``order="F"`` returns it Fortran-ordered, the layout NIfTI stores (nibabel then writes
        contiguous slices instead of gathering strided ones).
        """
        if order not in ("C", "F"):
            raise ValueError(f"order={order!r}: expected 'C' or 'F'")
        back = ornt.ornt_transform(_RAS, ornt.io_orientation(self.affine))
        view = ornt.apply_orientation(array, back)
        return c_order(view) if order == "C" else c_order(view.T).T


@dataclass(frozen=True, eq=False, repr=False)
class Case:
    """One loaded scan in canonical RAS orientation (axial slice ``z`` = ``flair[:, :, z]``).

    Attributes
    ----------
    case_id : str
    flair : (X, Y, Z) float32 ndarray
        Intensities as stored (raw or z-scored), not normalised.
    seg : (X, Y, Z) uint8 ndarray or None
        Ground-truth labels; whole tumour = ``seg > 0``.
    brain_mask : (X, Y, Z) bool ndarray
        From ``<ID>_brainmask`` when given, else :func:`compute_brain_mask`.
    affine : (4, 4) ndarray
        Canonical voxel-to-world affine.
    spacing : tuple of 3 float
        Voxel size in mm, in canonical axis order.
    source_path : Path or None
        The FLAIR file (None for :func:`case_from_arrays`).
    geometry : NiftiGeometry
        For writing results back in the original geometry (:func:`save_like`).
    """

    case_id: str
    flair: np.ndarray
    seg: np.ndarray | None
    brain_mask: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    source_path: Path | None
    geometry: NiftiGeometry

    @property
    def shape(self) -> tuple[int, int, int]:
        """Canonical ``(X, Y, Z)`` shape of the volume."""
        return tuple(self.flair.shape)  # type: ignore[return-value]

    def __repr__(self) -> str:  # arrays are far too large to print
        gt = "with seg" if self.seg is not None else "no seg"
        return (f"Case({self.case_id!r}, shape={self.shape}, spacing={self.spacing}, {gt}, "
                f"source={str(self.source_path) if self.source_path else None!r})")


# --------------------------------------------------------------------------------------------
# Finding cases
# --------------------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str] | None:
    """``"X_flair.nii.gz"`` -> ``("X", "flair")``; None for a file that is not NIfTI-named."""
    m = _NIFTI_RE.match(name)
    if m is None:
        return None
    stem = m.group("stem")
    if stem.lower() in FLAIR_ROLES + SEG_ROLES + MASK_ROLES:  # e.g. case1/flair.nii.gz
        return "", stem.lower()
    r = _ROLE_RE.match(stem)
    if r is None:
        return stem, ""
    return r.group("id"), r.group("role").lower()


def _cases_in_dir(folder: Path, names: Iterable[str]) -> list[CaseFiles]:
    """Group the NIfTI files of one folder by case id; a group without FLAIR is an error."""
    groups: dict[str, dict[str, Path]] = {}
    for name in sorted(names):
        parts = _split_name(name)
        if parts is None:
            continue
        case_id, role = parts
        known = FLAIR_ROLES + SEG_ROLES + MASK_ROLES + OTHER_ROLES
        if role not in known:
            continue
        case_id = case_id or folder.name
        slot = "flair" if role in FLAIR_ROLES else role
        entry = groups.setdefault(case_id, {})
        if slot in entry and slot in ("flair", "seg", "brainmask"):
            raise InputFileError(folder / name, f"case {case_id!r} has two {slot} files "
                                 f"({entry[slot].name} and {name}); keep one")
        entry[slot] = folder / name
    cases = []
    for case_id, entry in groups.items():
        if "flair" not in entry:
            present = ", ".join(sorted(p.name for p in entry.values()))
            raise InputFileError(folder, f"case {case_id!r} has no FLAIR image ({case_id}"
                                 f"_flair.nii.gz or {case_id}-t2f.nii.gz); found {present}")
        cases.append(CaseFiles(case_id=case_id, path=folder, flair=entry["flair"],
                               seg=entry.get("seg"), brain_mask=entry.get("brainmask")))
    return cases


def _single_file(path: Path) -> CaseFiles:
    parts = _split_name(path.name)
    if parts is None:
        raise InputFileError(path, "not a NIfTI file (expected a .nii or .nii.gz name)")
    case_id, role = parts
    if role in FLAIR_ROLES:  # a BraTS FLAIR given directly: pick up its seg/brain mask too
        siblings = [p.name for p in path.parent.iterdir() if _split_name(p.name) is not None
                    and _split_name(p.name)[0] == case_id]  # type: ignore[index]
        for cf in _cases_in_dir(path.parent, siblings):
            if cf.flair == path:
                return CaseFiles(cf.case_id, path, path, cf.seg, cf.brain_mask)
    stem = _NIFTI_RE.match(path.name).group("stem")  # type: ignore[union-attr]
    return CaseFiles(case_id=stem, path=path, flair=path)


def find_cases(root: str | Path) -> list[CaseFiles]:
    """Find the cases under a dataset root, in a case folder, or a single NIfTI file.

    Parameters
    ----------
    root : str or Path
        A dataset root (one folder per case, possibly grouped up to two levels deep, e.g.
        BraTS'19 ``HGG/<ID>/``), a case folder, or one ``.nii``/``.nii.gz`` file (a BraTS FLAIR
        file given directly brings its ``_seg``/``_brainmask`` siblings along). Hidden folders
        (``.cavlog_cache``) are skipped.

    Returns
    -------
    list of CaseFiles
        Sorted by ``case_id``.

    Raises
    ------
    InputFileError
        ``root`` missing, a non-NIfTI file, or a case folder whose files include no FLAIR.
    CavlogError
        No case found, or the same case id in two places.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise InputFileError(root, "no such file or directory")
    if root.is_file():
        return [_single_file(root)]
    found: list[CaseFiles] = []
    def unreadable(err: OSError) -> None:  # os.walk would skip the folder silently
        raise InputFileError(err.filename or root, f"cannot read this folder "
                                                   f"({err.strerror or err}); fix its "
                                                   "permissions or leave it out")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        depth = len(Path(dirpath).relative_to(root).parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and depth < _MAX_DEPTH)
        found.extend(_cases_in_dir(Path(dirpath), filenames))
    if not found:
        raise CavlogError(f"{root}: no cases found (expected <ID>/<ID>_flair.nii.gz or "
                          "<ID>/<ID>-t2f.nii.gz, or a .nii/.nii.gz file)")
    by_id: dict[str, CaseFiles] = {}
    for cf in found:
        if cf.case_id in by_id:
            raise CavlogError(f"{root}: case id {cf.case_id!r} appears twice "
                              f"({by_id[cf.case_id].flair} and {cf.flair})")
        by_id[cf.case_id] = cf
    return [by_id[k] for k in sorted(by_id)]


# --------------------------------------------------------------------------------------------
# Loading and validation
# --------------------------------------------------------------------------------------------
def _read_nifti(path: Path) -> tuple[np.ndarray, nib.Nifti1Pair]:
    """Read one NIfTI volume (3D, or 4D+ with trailing singleton axes) in its stored voxel order."""
    if _NIFTI_RE.match(path.name) is None:
        raise InputFileError(path, "not a NIfTI file (expected a .nii or .nii.gz name)")
    try:
        img = nib.load(path)
    except FileNotFoundError:
        raise InputFileError(path, "no such file") from None
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError,
            gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError) as err:
        raise InputFileError(path, f"not a readable NIfTI file ({_reason(err, path)})") from None
    if not isinstance(img, nib.Nifti1Pair):  # Nifti2 derives from Nifti1
        raise InputFileError(path, f"not a NIfTI file (read as {type(img).__name__})")
    shape = img.shape
    if len(shape) < 3:
        raise InputFileError(path, f"{len(shape)}D image of shape {shape}: expected a 3D volume")
    if len(shape) > 3 and any(s != 1 for s in shape[3:]):
        raise InputFileError(path, f"{len(shape)}D image of shape {shape}: expected a 3D volume "
                             "(one FLAIR volume, not a time series or a multi-channel image)")
    _check_claimed_size(path, (int(shape[0]), int(shape[1]), int(shape[2])))
    _check_affine(path, img.affine)
    try:
        data = np.asarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise InputFileError(path, "corrupt or truncated NIfTI data "
                             f"({_reason(err, path)})") from None
    if data.dtype.kind not in "biuf":
        raise InputFileError(path, f"unsupported voxel type {data.dtype}: expected a scalar image")
    return data.reshape(shape[:3]), img


def _available_memory() -> int | None:
    """Bytes of memory available now (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_claimed_size(path: Path, shape: tuple[int, int, int]) -> None:
    """Refuse a header whose claimed size is absurd or would not fit in memory."""
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        raise InputFileError(path, f"empty volume of shape {shape}")
    need = 3 * 4 * n  # float32 plus the working copies of loading and reorienting
    if n > MAX_VOXELS:
        raise InputFileError(path, f"the header claims {shape[0]} x {shape[1]} x {shape[2]} "
                                   f"voxels ({need / 2**30:.1f} GiB to load); the limit is "
                                   f"{MAX_VOXELS} voxels (a corrupt or hostile header?)")
    avail = _available_memory()
    if avail is not None and need > avail:
        raise InputFileError(path, f"the header claims {shape[0]} x {shape[1]} x {shape[2]} "
                                   f"voxels, {need / 2**30:.1f} GiB to load, more than the "
                                   f"{avail / 2**30:.1f} GiB of memory available")


def _check_affine(path: Path, affine: np.ndarray) -> None:
    """Finite, invertible voxel-to-world affine; warn when oblique or of extreme spacing."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.isfinite(a).all():
        raise InputFileError(path, "the affine (voxel-to-world matrix) holds NaN or Inf values: "
                                   "corrupt header")
    rot = a[:3, :3]
    spacing = np.sqrt((rot ** 2).sum(axis=0))
    if spacing.min() <= 0 or abs(np.linalg.det(rot)) < 1e-12 * max(spacing.prod(), 1e-300):
        raise InputFileError(path, "the affine is singular (a zero or repeated axis): corrupt "
                                   "header, the voxel grid has no orientation")
    lo, hi = SPACING_RANGE_MM
    if spacing.min() < lo or spacing.max() > hi:
        warnings.warn(f"{path}: voxel size {' x '.join(f'{v:.3g}' for v in spacing)} mm is "
                      f"outside {lo:g}-{hi:g} mm; check the header's units",
                      RuntimeWarning, stacklevel=3)
    cosines = np.abs(rot / spacing)
    if cosines.max(axis=0).min() < 0.995:  # an axis more than ~6 degrees off the world axes
        warnings.warn(f"{path}: oblique acquisition (axes up to "
                      f"{np.degrees(np.arccos(cosines.max(axis=0).min())):.0f} degrees off the "
                      "world axes); slices are taken along the nearest world axis",
                      RuntimeWarning, stacklevel=3)


def _reason(err: BaseException, path: Path) -> str:
    """First line of a library error, without repeating the full path already in front."""
    text = str(err).strip().splitlines()
    return (text[0].replace(str(path), path.name) if text else type(err).__name__)[:160]


def _check_finite(data: np.ndarray, path: Path | str) -> None:
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputFileError(path, f"{int(bad.sum())} NaN/Inf voxel(s); "
                                 "the image must be finite")


def _check_same_grid(path: Path, data: np.ndarray, affine: np.ndarray,
                     ref_shape: tuple[int, ...], ref_affine: np.ndarray, ref_name: str) -> None:
    if data.shape != tuple(ref_shape):
        raise InputFileError(path, f"shape {data.shape} differs from the FLAIR {ref_name} "
                             f"shape {tuple(ref_shape)}")
    if not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
        diff = float(np.abs(affine - ref_affine).max())
        raise InputFileError(path, f"affine differs from the FLAIR {ref_name} affine "
                             f"(max difference {diff:.3g}); the files are not on the same grid")


def _check_labels(data: np.ndarray, path: Path | str, allowed: frozenset[int]) -> np.ndarray:
    """Integer label volume -> uint8, refusing values outside ``allowed``."""
    _check_finite(data, path)
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise InputFileError(path, "non-integer label values; expected integer labels "
                             f"{sorted(allowed)}")
    flat = torch_view(data.ravel(order="K")) if data.dtype == np.uint8 else None
    if flat is not None:
        # The usual case: a histogram is ~100x faster than np.unique, torch's ~5x faster than
        # numpy's (which widens to int64 first); order="K" copies nothing for Fortran order.
        values = np.flatnonzero(torch.bincount(flat, minlength=256).numpy())
    else:
        values = np.unique(data)
    unexpected = sorted(set(values.tolist()) - allowed)
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:6])
        raise InputFileError(path, f"unexpected label value(s) {shown}; expected labels "
                             f"{sorted(allowed)} (BraTS) or {{0, 1}}")
    return data.astype(np.uint8, copy=False)


def _allowed_labels(seg_path: Path | None) -> frozenset[int]:
    if seg_path is not None and re.search(r"-seg\.nii(\.gz)?$", seg_path.name, re.IGNORECASE):
        return LABELS_2023
    return LABELS_2017


def _finish_case(case_id: str, flair: np.ndarray, seg: np.ndarray | None,
                 brain: np.ndarray | None, geometry: NiftiGeometry, source: Path | None,
                 name: Path | str) -> Case:
    """Reorient validated arrays (original voxel order) to RAS and assemble the Case."""
    flair_c = geometry.to_canonical(flair, np.float32)
    seg_c = None if seg is None else geometry.to_canonical(seg)
    if brain is None:
        brain_c = compute_brain_mask(flair_c)
        if not brain_c.any():
            raise InputFileError(name, "empty brain: every voxel has the background value "
                                 f"{float(flair_c.min()):g}")
        share = float(brain_c.mean())
        if not 0.005 <= share <= 0.6:  # a skull-stripped head fills 10-35 % of its grid
            warnings.warn(f"{name}: the brain found fills {100 * share:.1f} % of the volume; "
                          "this does not look like a skull-stripped brain scan (noise, another "
                          "body part or a missing brain mask?)", RuntimeWarning, stacklevel=3)
    else:
        brain_c = geometry.to_canonical(brain)
        if not brain_c.any():
            raise InputFileError(name, "empty brain mask: no voxel is inside the brain")
    affine = geometry.canonical_affine
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Case(case_id=case_id, flair=flair_c, seg=seg_c, brain_mask=brain_c, affine=affine,
                spacing=spacing, source_path=source, geometry=geometry)  # type: ignore[arg-type]


def load_case(case: str | Path | CaseFiles) -> Case:
    """Load and validate one case in canonical RAS orientation.

    Parameters
    ----------
    case : str, Path or CaseFiles
        A case folder, a NIfTI file, or an entry of :func:`find_cases`.

    Returns
    -------
    Case
        ``flair`` (X, Y, Z) float32, ``seg`` (X, Y, Z) uint8 or None, ``brain_mask`` bool.

    Raises
    ------
    InputFileError
        With a one-line message naming the file: unreadable/corrupt/truncated or non-NIfTI file,
        2D or 4D image, FLAIR/seg (or brain mask) shape or affine mismatch, NaN/Inf voxels,
        empty brain, unexpected label values.
    """
    if not isinstance(case, CaseFiles):
        cases = find_cases(case)
        if len(cases) != 1:
            raise CavlogError(f"{case}: holds {len(cases)} cases; give one case folder or file")
        case = cases[0]
    flair, img = _read_nifti(case.flair)
    _check_finite(flair, case.flair)
    if flair.dtype.kind == "b":
        flair = flair.astype(np.uint8)
    geometry = NiftiGeometry.from_affine(img.affine, flair.shape, img.header.copy())
    seg = brain = None
    if case.seg is not None:
        seg_data, seg_img = _read_nifti(case.seg)
        _check_same_grid(case.seg, seg_data, seg_img.affine, flair.shape, img.affine, "image")
        seg = _check_labels(seg_data, case.seg, _allowed_labels(case.seg))
        del seg_data
    if case.brain_mask is not None:
        mask_data, mask_img = _read_nifti(case.brain_mask)
        _check_same_grid(case.brain_mask, mask_data, mask_img.affine, flair.shape, img.affine,
                         "image")
        brain = _check_labels(mask_data, case.brain_mask, frozenset({0, 1})).astype(bool)
        del mask_data
    name = case.brain_mask if case.brain_mask is not None else case.flair
    return _finish_case(case.case_id, flair, seg, brain, geometry, case.flair, name)


def case_from_arrays(flair: np.ndarray, *, seg: np.ndarray | None = None,
                     brain_mask: np.ndarray | None = None, affine: np.ndarray | None = None,
                     case_id: str = "case") -> Case:
    """Build a :class:`Case` from in-memory arrays, exactly as if they were read from a file.

    Parameters
    ----------
    flair : (X, Y, Z) array
        Voxels in the order described by ``affine`` (identity, i.e. already RAS, by default).
    seg : (X, Y, Z) integer array, optional
        Labels in {0, 1, 2, 3, 4}.
    brain_mask : (X, Y, Z) array, optional
        Nonzero = brain; computed with :func:`compute_brain_mask` when omitted.
    affine : (4, 4) array, optional
        Voxel-to-world affine; a non-RAS affine reorients the arrays to canonical RAS.
    case_id : str
        Used as the case name and in error messages.
    """
    flair = np.asarray(flair)
    if flair.ndim != 3:
        raise CavlogError(f"{case_id}: FLAIR of shape {flair.shape}: expected a 3D volume")
    if flair.dtype.kind not in "biuf":
        raise CavlogError(f"{case_id}: unsupported FLAIR dtype {flair.dtype}")
    _check_finite(flair, case_id)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise CavlogError(f"{case_id}: affine of shape {affine.shape}: expected (4, 4)")
    geometry = NiftiGeometry.from_affine(affine, flair.shape)
    for name, arr in (("seg", seg), ("brain_mask", brain_mask)):
        if arr is not None and np.shape(arr) != flair.shape:
            raise CavlogError(f"{case_id}: {name} shape {np.shape(arr)} differs from the FLAIR "
                              f"shape {flair.shape}")
    seg_u8 = None if seg is None else _check_labels(np.asarray(seg), f"{case_id} (seg)",
                                                      LABELS_2017 | LABELS_2023)
    brain = None if brain_mask is None else np.asarray(brain_mask) != 0
    return _finish_case(case_id, flair.astype(np.float32, copy=False), seg_u8, brain, geometry,
                        None, case_id)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def save_like(array: np.ndarray, like: Case | NiftiGeometry, path: str | Path) -> Path:
    """Write a canonical-grid array as NIfTI in the original file's geometry (atomic).

    Parameters
    ----------
    array : (X, Y, Z) ndarray
        On the canonical grid of ``like`` (e.g. an anomaly map or a mask).
    like : Case or NiftiGeometry
        Source of the original voxel order, affine and header.
    path : str or Path
        Output ``.nii`` or ``.nii.gz``.

    Returns
    -------
    Path
        ``path``. The dtype is kept (float32 maps, uint8 masks); bool is written as uint8 and
        float16 as float32 (NIfTI has no half floats).
    """
    geometry = like.geometry if isinstance(like, Case) else like
    path = Path(path)
    if _NIFTI_RE.match(path.name) is None:
        raise CavlogError(f"{path}: output must end in .nii or .nii.gz")
    array = np.asarray(array)
    if array.shape != geometry.canonical_shape:
        raise CavlogError(f"{path}: array shape {array.shape} differs from the case shape "
                          f"{geometry.canonical_shape}")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    data = geometry.from_canonical(array, order="F")
    header = nib.Nifti1Header() if geometry.header is None else \
        nib.Nifti1Header.from_header(geometry.header)
    header.set_data_dtype(data.dtype)
    header.set_slope_inter(1.0, 0.0)  # values are written as they are, never rescaled
    header["cal_min"] = header["cal_max"] = 0  # display range of the source no longer applies
    img = nib.Nifti1Image(data, geometry.affine, header=header)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path


def iter_loaded_cases(cases: Sequence[CaseFiles], *, prefetch: bool = True) -> Iterator[Case]:
    """:func:`load_case` of each case in order, the next one read on a background thread.

    While the caller works on case ``k`` (inference, writing outputs), case ``k + 1`` is decoded
    (gzip and NIfTI decoding release the GIL), so a folder is not read and computed in turn. An
    unreadable case raises its :class:`CavlogError` when the caller reaches it, as a plain loop
    would; stopping early (``close()``) waits for the read in flight and discards it.
    """
    if not prefetch or len(cases) < 2:
        for files in cases:
            yield load_case(files)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavlog-read") as pool:
        pending = pool.submit(load_case, cases[0])
        for k in range(len(cases)):
            current = pending.result()
            if k + 1 < len(cases):
                pending = pool.submit(load_case, cases[k + 1])
            yield current
