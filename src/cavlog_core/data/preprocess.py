"""From a loaded volume to model-ready axial slices, and back.

Follows Silva-Rodríguez, Naranjo & Dolz (BMVC 2021): per-volume intensity normalisation of the
FLAIR inside the brain, the N central axial slices of the brain (default 10), and square model
inputs (224² by default). Slices keep the canonical ``(X, Y)`` layout; the resize preserves the
aspect ratio and zero-pads, and :meth:`SliceGeometry.to_volume` is its exact geometric inverse.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from ..config import PreprocessConfig
from ..errors import CavlogError
from .io import Case, torch_view

__all__ = [
    "SliceBatch",
    "SliceGeometry",
    "match_histogram",
    "normalize_intensity",
    "prepare_slices",
    "select_slices",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
_SPEC_RE = re.compile(r"^(?:central:(?P<n>\d+)|(?P<brain>brain))$")


# --------------------------------------------------------------------------------------------
# Intensities
# --------------------------------------------------------------------------------------------
def _brain_range(flair: np.ndarray, brain_mask: np.ndarray,
                 percentiles: tuple[float, float]) -> tuple[float, float]:
    values = flair[brain_mask]
    if values.size == 0:
        raise CavlogError("intensity normalisation: the brain mask is empty")
    lo, hi = np.percentile(values, percentiles)
    return float(lo), float(hi)


def _apply_range(x: np.ndarray, brain: np.ndarray, lo: float, hi: float) -> np.ndarray:
    scale = 1.0 / (hi - lo) if hi > lo else 0.0  # constant brain -> 0 everywhere
    out = (x.astype(np.float32) - np.float32(lo)) * np.float32(scale)
    np.clip(out, 0.0, 1.0, out=out)
    out *= brain
    return out


def normalize_intensity(flair: np.ndarray, brain_mask: np.ndarray,
                        percentiles: tuple[float, float] = (1.0, 99.0)) -> np.ndarray:
    """Robust per-volume normalisation to [0, 1] inside the brain.

    Parameters
    ----------
    flair : (X, Y, Z) ndarray
    brain_mask : (X, Y, Z) bool ndarray
    percentiles : (low, high)
        The brain's low/high percentiles map to 0 and 1; values beyond are clipped.

    Returns
    -------
    (X, Y, Z) float32 ndarray
        In [0, 1], 0 outside the brain (and everywhere for a constant brain).
    """
    brain_mask = np.asarray(brain_mask, dtype=bool)
    if flair.shape != brain_mask.shape:
        raise CavlogError(f"normalize_intensity: flair shape {flair.shape} differs from the "
                          f"brain mask shape {brain_mask.shape}")
    lo, hi = _brain_range(flair, brain_mask, percentiles)
    return _apply_range(flair, brain_mask, lo, hi)


def match_histogram(image: np.ndarray, brain_mask: np.ndarray, reference: np.ndarray,
                    reference_mask: np.ndarray) -> np.ndarray:
    """Match the brain's intensity histogram to a reference brain's (exact rank mapping).

    Parameters
    ----------
    image : (X, Y, Z) ndarray
        Usually already normalised with :func:`normalize_intensity`.
    brain_mask : (X, Y, Z) bool ndarray
    reference : ndarray
        Any shape; only ``reference[reference_mask]`` is used.
    reference_mask : bool ndarray, same shape as ``reference``

    Returns
    -------
    (X, Y, Z) float32 ndarray
        Brain voxels mapped by ``skimage.exposure.match_histograms`` on the brain values only;
        0 outside the brain.
    """
    from skimage.exposure import match_histograms

    brain_mask = np.asarray(brain_mask, dtype=bool)
    ref = np.asarray(reference)[np.asarray(reference_mask, dtype=bool)]
    if ref.size == 0 or not brain_mask.any():
        raise CavlogError("match_histogram: empty brain mask in the image or the reference")
    out = np.zeros(image.shape, dtype=np.float32)
    out[brain_mask] = match_histograms(image[brain_mask], ref)
    return out


@functools.lru_cache(maxsize=4)
def _reference_values(path: str, mtime_ns: int, percentiles: tuple[float, float]) -> np.ndarray:
    """Normalised brain intensities of a histogram reference (cached per file version)."""
    from .io import load_case

    ref = load_case(path)
    lo, hi = _brain_range(ref.flair, ref.brain_mask, percentiles)
    return _apply_range(ref.flair[ref.brain_mask], np.ones(1, dtype=bool), lo, hi)


def _reference_for(cfg: PreprocessConfig) -> np.ndarray | None:
    if cfg.histogram_reference is None:
        return None
    path = Path(cfg.histogram_reference).expanduser()
    if not path.exists():
        raise CavlogError(f"histogram_reference={str(path)!r}: no such file or directory")
    return _reference_values(str(path.resolve()), path.stat().st_mtime_ns, cfg.percentiles)


@functools.lru_cache(maxsize=1)
def _builtin_slice_reference() -> np.ndarray:
    """Sorted brain intensities of a fixed healthy slice: the default ``max-histogram`` target.

    The central axial slice of healthy synthetic subject 0 (seed 0), divided by its volume's
    maximum: deterministic, shipped with the code (nothing is read from disk), and healthy by
    construction, as the authors' fixed reference slice.
    """
    from ..synth import generate_subject, subject_seed

    flair, _, brain = generate_subject(subject_seed(0, 0), (240, 240, 155), healthy=True)
    z = int(np.median(np.nonzero(brain.any(axis=(0, 1)))[0]))
    values = flair[:, :, z][brain[:, :, z]] / np.float32(flair[brain].max())
    return np.sort(values.astype(np.float32))


def _match_slices(images: np.ndarray, brain: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Histogram-match each ``(N, X, Y)`` slice's brain pixels to ``reference`` (rank mapping)."""
    ref = np.sort(np.asarray(reference, dtype=np.float32).ravel())
    out = np.zeros(images.shape, dtype=np.float32)
    for i in range(images.shape[0]):
        values = images[i][brain[i]]
        if values.size == 0:
            continue
        # Quantile mapping: the pixel of rank r (ties averaged) takes the reference quantile r.
        order = np.argsort(values, kind="stable")
        ranks = np.empty(values.size, dtype=np.float64)
        ranks[order] = np.arange(values.size)
        _, inverse = np.unique(values, return_inverse=True)
        mean_rank = np.bincount(inverse, ranks) / np.bincount(inverse)
        q = mean_rank[inverse] / max(values.size - 1, 1)
        out[i][brain[i]] = np.interp(q, np.linspace(0.0, 1.0, ref.size), ref)
    return out


# --------------------------------------------------------------------------------------------
# Slice selection
# --------------------------------------------------------------------------------------------
def select_slices(brain_mask: np.ndarray, spec: str = "central:10", *,
                  min_brain_fraction: float = 0.15) -> np.ndarray:
    """Axial slices to use, as sorted ``int64`` indices ``z``.

    Parameters
    ----------
    brain_mask : (X, Y, Z) bool ndarray
    spec : str
        ``"central:N"``: N consecutive slices centred on the middle of the brain's axial extent
        (first to last slice with any brain), the paper's protocol; if N exceeds the extent the
        whole extent is returned, never a slice outside it. ``"brain"``: every slice whose brain
        area is at least ``min_brain_fraction`` of the largest slice's.
    min_brain_fraction : float
        Only for ``"brain"``.

    Returns
    -------
    (N,) int64 ndarray
    """
    m = _SPEC_RE.match(str(spec))
    if m is None:
        raise CavlogError(f"slices={spec!r}: expected 'central:N' (N >= 1) or 'brain'")
    brain_mask = np.asarray(brain_mask)
    if brain_mask.ndim != 3:
        raise CavlogError(f"select_slices: brain mask of shape {brain_mask.shape}: expected 3D")
    area = np.count_nonzero(brain_mask, axis=(0, 1))
    if area.max(initial=0) == 0:
        raise CavlogError("select_slices: the brain mask is empty")
    if m.group("brain"):
        if not 0 <= min_brain_fraction < 1:
            raise CavlogError(f"min_brain_fraction={min_brain_fraction}: must be in [0, 1)")
        keep = (area > 0) & (area >= min_brain_fraction * area.max())
        return np.flatnonzero(keep).astype(np.int64)
    n = int(m.group("n"))
    if n < 1:
        raise CavlogError(f"slices={spec!r}: N must be >= 1")
    nz = np.flatnonzero(area)
    first, last = int(nz[0]), int(nz[-1])
    if n >= last - first + 1:
        return np.arange(first, last + 1, dtype=np.int64)
    # Centre of the extent is (first + last) / 2; the N slices' centre is start + (N - 1) / 2.
    start = int(np.floor((first + last - (n - 1)) / 2 + 0.5))
    start = min(max(start, first), last + 1 - n)
    return np.arange(start, start + n, dtype=np.int64)


# --------------------------------------------------------------------------------------------
# Resizing to the model resolution and back
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SliceGeometry:
    """Aspect-preserving resize of ``(X, Y)`` slices into an ``R x R`` square, zero-padded.

    Attributes
    ----------
    in_shape : (X, Y)
        Slice shape in the volume.
    resolution : int
        Model input side R.
    scale : float
        ``R / max(X, Y)``.
    offsets : (ox, oy)
        Where the resized ``(nx, ny)`` slice starts inside the square (centred).
    """

    in_shape: tuple[int, int]
    resolution: int
    scale: float
    offsets: tuple[int, int]

    @classmethod
    def for_shape(cls, in_shape: tuple[int, int], resolution: int = 224) -> SliceGeometry:
        """Geometry that fits ``in_shape`` slices into ``resolution``² squares."""
        x, y = (int(s) for s in in_shape)
        if x < 1 or y < 1 or resolution < 1:
            raise CavlogError(f"SliceGeometry: bad slice shape {in_shape} or resolution "
                              f"{resolution}")
        scale = resolution / max(x, y)
        nx, ny = (max(1, min(resolution, round(s * scale))) for s in (x, y))
        return cls((x, y), int(resolution), scale, ((resolution - nx) // 2, (resolution - ny) // 2))

    @property
    def resized(self) -> tuple[int, int]:
        """``(nx, ny)``: the slice's size inside the square."""
        return tuple(max(1, min(self.resolution, round(s * self.scale)))  # type: ignore
                     for s in self.in_shape)

    @staticmethod
    def _as_tensor(arr: ArrayT) -> tuple[torch.Tensor, bool]:
        if isinstance(arr, torch.Tensor):
            return arr, False
        return torch.from_numpy(np.ascontiguousarray(arr)), True

    @staticmethod
    def _resize(t: torch.Tensor, size: tuple[int, int], order: int, shrink: bool) -> torch.Tensor:
        """Resize ``(N, h, w)`` -> ``(N, *size)``; bool input is resized as a mask."""
        is_mask = t.dtype == torch.bool
        # float32 on every device: a constant image comes back within a few ulps (float64 made
        # that exact on the CPU at ~4x the cost, and nothing downstream needs it: images are
        # clipped to [0, 1], maps thresholded). No copy when the input is float32 already.
        x = t[:, None].to(torch.float32)
        if tuple(x.shape[-2:]) != tuple(size):
            if order == 0:
                x = F.interpolate(x, size=size, mode="nearest-exact")
            elif order == 1:
                # Anti-aliasing only when shrinking; its kernel equals bilinear otherwise.
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=shrink)
            else:
                raise CavlogError(f"order={order}: expected 0 (nearest) or 1 (bilinear)")
        elif t.dtype == torch.float32:
            x = x.clone()  # never hand back a view of the caller's array
        x = x[:, 0]
        return x >= 0.5 if is_mask else x  # masks: thresholded bilinear (or nearest)

    def _check(self, shape: tuple[int, ...], expected: tuple[int, int], what: str) -> None:
        if len(shape) != 3 or tuple(shape[1:]) != tuple(expected):
            raise CavlogError(f"SliceGeometry.{what}: array of shape {tuple(shape)}: expected "
                              f"(N, {expected[0]}, {expected[1]})")

    def to_model(self, arr: ArrayT, order: int = 1) -> ArrayT:
        """Volume slices ``(N, X, Y)`` -> model inputs ``(N, R, R)``.

        Parameters
        ----------
        arr : (N, X, Y) ndarray or Tensor
            Float images, or bool masks (resized bilinearly then thresholded at 0.5 for
            ``order=1``, nearest for ``order=0``).
        order : {0, 1}
            Nearest or bilinear (anti-aliased when shrinking).

        Returns
        -------
        (N, R, R) float32 (bool for masks), same kind (numpy/torch) and device as the input;
        zero outside the resized slice.
        """
        t, was_numpy = self._as_tensor(arr)
        self._check(tuple(t.shape), self.in_shape, "to_model")
        nx, ny = self.resized
        ox, oy = self.offsets
        small = self._resize(t, (nx, ny), order, shrink=self.scale < 1)
        r = self.resolution
        out = torch.zeros((t.shape[0], r, r), dtype=small.dtype, device=small.device)
        out[:, ox:ox + nx, oy:oy + ny] = small
        return out.numpy() if was_numpy else out  # type: ignore[return-value]

    def to_volume(self, arr: ArrayT, order: int = 1) -> ArrayT:
        """Model-resolution maps ``(N, R, R)`` -> volume slices ``(N, X, Y)``.

        Crops the padded square back to the resized slice and resizes it to ``(X, Y)`` with
        the same pixel-centre convention (``align_corners=False``) as :meth:`to_model`, so the
        two are geometric inverses: constant images come back to within a few float32 ulps, smooth
        ones closely.
        """
        t, was_numpy = self._as_tensor(arr)
        r = self.resolution
        self._check(tuple(t.shape), (r, r), "to_volume")
        nx, ny = self.resized
        ox, oy = self.offsets
        crop = t[:, ox:ox + nx, oy:oy + ny]
        out = self._resize(crop, self.in_shape, order, shrink=self.scale > 1)
        return out.numpy() if was_numpy else out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Case -> model slices
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class SliceBatch:
    """Model-ready axial slices of one case (numpy; ``torch.from_numpy`` shares memory).

    Attributes
    ----------
    images : (N, 1, R, R) float32 ndarray
        Normalised FLAIR in [0, 1].
    brain : (N, 1, R, R) bool ndarray
    lesion : (N, 1, R, R) bool ndarray or None
        Whole tumour (``seg > 0``), None without ground truth.
    z : (N,) int64 ndarray
        Axial index of each slice in the canonical volume.
    geometry : SliceGeometry
        Maps model-resolution maps back with :meth:`SliceGeometry.to_volume`.
    case_id : str
    lesion_voxels : (N,) int64 ndarray or None
        Lesion voxels per slice at the volume's own resolution (a tiny lesion can vanish when
        resized, so "lesion-free" is decided on this count).
    brain_slices : (N, X, Y) bool ndarray or None
        The brain mask of each slice at the volume's own resolution (maps brought back with
        :meth:`SliceGeometry.to_volume` are zeroed outside it).
    """

    images: np.ndarray
    brain: np.ndarray
    lesion: np.ndarray | None
    z: np.ndarray
    geometry: SliceGeometry
    case_id: str
    lesion_voxels: np.ndarray | None = None
    brain_slices: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.z.shape[0])


def _slices(vol: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` volume -> ``(N, X, Y)`` stack of the axial slices ``z`` (a new array)."""
    t = torch_view(vol)
    if t is not None:
        # torch's strided gather + transpose is ~1.5x faster than numpy's on these volumes.
        return t.permute(2, 0, 1)[torch.from_numpy(z)].contiguous().numpy()
    return np.ascontiguousarray(np.moveaxis(vol[:, :, z], -1, 0))


def check_slice_indices(case: Case, z: np.ndarray) -> np.ndarray:
    """Return ``z`` as a flat int64 array, refusing indices outside the case's axial range."""
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    depth = case.flair.shape[2]
    if z.size and (z.min() < 0 or z.max() >= depth):
        raise CavlogError(f"{case.case_id}: slice indices must lie in [0, {depth - 1}], got "
                          f"{int(z.min())}..{int(z.max())}")
    return z


def prepare_slices(case: Case, cfg: PreprocessConfig | None = None,
                   z: np.ndarray | None = None, *, lesion: bool = True) -> SliceBatch:
    """Normalise a case and cut it into model-ready axial slices.

    Parameters
    ----------
    case : Case
    cfg : PreprocessConfig, optional
        Resolution, slice selection, percentiles, optional histogram reference.
    z : (N,) int array, optional
        Axial slices to use; default ``select_slices(case.brain_mask, cfg.slices)``.
    lesion : bool
        Also cut the ground truth when the case has one (False skips it: inference needs none).

    Returns
    -------
    SliceBatch
        ``images`` (N, 1, R, R) float32 in [0, 1], ``brain`` and ``lesion`` (N, 1, R, R) bool
        (``lesion`` None without ground truth or with ``lesion=False``).
    """
    cfg = cfg or PreprocessConfig()
    brain = case.brain_mask
    if z is None:
        z = select_slices(brain, cfg.slices, min_brain_fraction=cfg.min_brain_fraction)
    z = check_slice_indices(case, z)
    brain_s = _slices(brain, z)
    reference = _reference_for(cfg)
    if cfg.normalization == "max-histogram":
        # The authors' code: divide by the volume's maximum, then match every slice's histogram
        # to one healthy reference slice (division first only matters for the file reference).
        if not brain.any():
            raise CavlogError(f"{case.case_id}: the brain mask is empty")
        vmax = float(np.abs(case.flair[brain]).max()) or 1.0
        scaled = _slices(case.flair, z).astype(np.float32) / np.float32(vmax)
        target = _builtin_slice_reference() if reference is None else reference
        images = np.clip(_match_slices(scaled, brain_s, target), 0.0, 1.0)
        reference = None
    else:
        lo, hi = _brain_range(case.flair, brain, cfg.percentiles)
        images = _apply_range(_slices(case.flair, z), brain_s, lo, hi)
    if reference is not None:
        # The mapping is defined by the whole brain, then applied to the chosen slices.
        from skimage.exposure import match_histograms

        full = _apply_range(case.flair[brain], np.ones(1, dtype=bool), lo, hi)  # type: ignore
        matched = np.zeros(brain.shape, dtype=np.float32)
        matched[brain] = match_histograms(full, reference)
        images = np.clip(_slices(matched, z), 0.0, 1.0)
    geometry = SliceGeometry.for_shape(brain.shape[:2], cfg.resolution)
    images_r = np.clip(geometry.to_model(images, order=1), 0.0, 1.0)
    brain_r = geometry.to_model(brain_s, order=1)
    lesion_r = voxels = None
    if lesion and case.seg is not None:
        lesion_s = _slices(case.seg, z) > 0
        voxels = np.count_nonzero(lesion_s, axis=(1, 2)).astype(np.int64)
        lesion_r = geometry.to_model(lesion_s, order=1)[:, None]
    return SliceBatch(images=images_r[:, None], brain=brain_r[:, None], lesion=lesion_r, z=z,
                      geometry=geometry, case_id=case.case_id, lesion_voxels=voxels,
                      brain_slices=brain_s)
