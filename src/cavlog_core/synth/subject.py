"""One phantom subject: seeds, the healthy / lesioned assignment and the generator.

Each subject is an analytic 3D phantom evaluated on the voxel grid (canonical RAS, 1 mm
isotropic): the healthy anatomy of :mod:`.anatomy` (deep structures, a cortical grey-matter
ribbon lining the surface, radial sulci and the interhemispheric fissure); a smooth random
deformation, size, intensity scale, bias field and noise vary between subjects. Lesioned subjects
get the lesions of :mod:`.lesions`. FLAIR contrast: CSF dark, grey matter brighter than white
matter, oedema bright. Only the brain's bounding box is filled at full resolution (grids and
geometry: :mod:`.fields`); everything is vectorised float32 numpy. :func:`generate_subject` runs
the steps of those modules in a fixed order, which fixes the order of the random draws.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..config import LESION_PRESETS, SynthConfig
from ..errors import CavlogError
from .anatomy import (
    _Anatomy,
    _anatomy_fields,
    _coarse_anatomy,
    _CoarseAnatomy,
    _draw_anatomy,
    _fine_tissue,
    _intracranial,
    _medium_fields,
    _Tissue,
    _ventricles,
    _Warp,
    _warp,
)
from .fields import _F32, _Box, _Geometry, _geometry, _resample, _work_box
from .lesions import _Lesion, _mass_effect, _paint_lesion, _paint_ms, _place_glioma

__all__ = ["SyntheticSubject", "generate_subject", "healthy_flags", "subject_seed", "synth_affine"]

_DEFAULT = SynthConfig()


class SyntheticSubject(NamedTuple):
    """One phantom volume (unpacks as ``flair, seg, brain``).

    Attributes
    ----------
    flair : (X, Y, Z) float32 ndarray
        Raw-like FLAIR intensities (integer-valued, white matter ~300-600, 0 outside the brain).
    seg : (X, Y, Z) uint8 ndarray
        Labels {0, 1, 2, 4} (all 0 for healthy subjects).
    brain : (X, Y, Z) bool ndarray
        Brain mask; ``flair > 0`` exactly inside it.
    """

    flair: np.ndarray
    seg: np.ndarray
    brain: np.ndarray


def subject_seed(seed: int, index: int) -> int:
    """Seed of subject ``index`` of a dataset generated with ``seed`` (independent of its size).

    Derived with :class:`numpy.random.SeedSequence` from ``(seed, index)``, so subject k is the
    same whatever the number of subjects.
    """
    if seed < 0 or index < 0:
        raise CavlogError(f"seed={seed}, index={index}: must be >= 0")
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _healthy_count(n: int, fraction: float) -> int:
    """Healthy subjects among the first ``n``: round(f n), with one of each kind when n >= 2."""
    if n <= 0:
        return 0
    count = math.floor(fraction * n + 0.5)
    if 0 < fraction < 1 and n >= 2:
        count = min(max(count, 1), n - 1)
    return count


def healthy_flags(n: int, fraction: float) -> np.ndarray:
    """Which of ``n`` subjects are healthy, as a ``(n,)`` bool array.

    Subject k is healthy when the target count ``H(k + 1) > H(k)`` with ``H(m)`` = round(f m)
    clipped to [1, m - 1] for m >= 2 (and 0 < f < 1). ``H`` never grows by more than one per
    subject, so subject k's flag does not depend on ``n``; the first two subjects are one healthy
    and one lesioned whenever 0 < f < 1, and about ``f n`` of ``n`` are healthy.
    """
    if not 0 <= fraction <= 1:
        raise CavlogError(f"healthy_fraction={fraction}: must be in [0, 1]")
    counts = np.array([_healthy_count(m, fraction) for m in range(n + 1)])
    return np.diff(counts) > 0


def synth_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """1 mm isotropic RAS affine (4, 4) with the world origin at the volume centre."""
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(shape, dtype=float) - 1) / 2
    return affine


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """``shape`` as three ints, each >= 16, or a :class:`CavlogError`."""
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise CavlogError(f"shape={shape!r}: expected three integers (X, Y, Z)") from None
    if len(dims) != 3 or min(dims) < 16:
        raise CavlogError(f"shape={tuple(shape)}: need three sizes, each >= 16")
    if math.prod(dims) > 2**31 - 1:
        raise CavlogError(f"shape={dims}: too many voxels")
    return dims  # type: ignore[return-value]


def generate_subject(seed: int, shape: tuple[int, int, int] = _DEFAULT.shape, *,
                     healthy: bool = False, lesions: str = _DEFAULT.lesions) -> SyntheticSubject:
    """Generate one phantom FLAIR volume with its labels and brain mask.

    Parameters
    ----------
    seed : int
        Non-negative seed; the same seed gives bit-identical arrays. The anatomy and the lesion
        use independent streams, so ``healthy=True`` gives the same brain without the tumour
        (and without its mass effect).
    shape : tuple of int
        ``(X, Y, Z)`` volume shape, each >= 16. Anatomy is defined for BraTS' 240x240x155 grid
        (1 mm) and scaled uniformly by ``min(X / 240, Y / 240, Z / 155)`` for other shapes.
    healthy : bool
        If True there is no lesion and ``seg`` is all zeros.
    lesions : {"glioma", "ms"}
        The disease (:class:`~cavlog_core.config.SynthConfig`): one glioma (labels 1, 2, 4, with
        mass effect) or many small multiple-sclerosis-like white-matter lesions (label 1).

    Returns
    -------
    SyntheticSubject
        ``flair`` (X, Y, Z) float32 (integer-valued, 0 outside the brain), ``seg`` (X, Y, Z)
        uint8 in {0, 1, 2, 4}, ``brain`` (X, Y, Z) bool.
    """
    dims = _check_args(seed, shape, lesions)
    anat_ss, lesion_ss, noise_ss = np.random.SeedSequence(int(seed)).spawn(3)
    rng = np.random.default_rng(anat_ss)  # the anatomy's stream, drawn from in this order
    an = _draw_anatomy(rng)
    geo = _geometry(dims)
    warp = _warp(rng, an, geo)
    glioma: _Lesion | None = None
    if not healthy and lesions == "glioma":
        glioma, warp = _glioma(lesion_ss, an, geo, warp)
    coarse = _coarse_anatomy(rng, an, geo, warp)
    box = _work_box(coarse.icv, geo)
    gyri, base = _medium_fields(rng, an, geo, box, coarse)
    tissue = _fine_tissue(an, geo, box, coarse, gyri, base)
    seg = _paint_disease(tissue, glioma, not healthy and lesions == "ms", lesion_ss, geo, box,
                         coarse)
    img = _acquire(tissue.img, tissue.brain, an, geo.vox_mm, noise_ss)
    return _embed(img, seg, tissue.brain, box, dims)


def _check_args(seed: int, shape: tuple[int, ...], lesions: str) -> tuple[int, int, int]:
    """Validate :func:`generate_subject`'s arguments; return the shape as three ints."""
    dims = _check_shape(shape)
    if int(seed) != seed or seed < 0:
        raise CavlogError(f"seed={seed!r}: must be a non-negative integer")
    if lesions not in LESION_PRESETS:
        raise CavlogError(f"lesions={lesions!r}: expected one of {', '.join(LESION_PRESETS)}")
    return dims


def _glioma(lesion_ss: np.random.SeedSequence, an: _Anatomy, geo: _Geometry,
            warp: _Warp) -> tuple[_Lesion, _Warp]:
    """Draw the glioma from the lesion stream; return it with the warp moved by its mass effect."""
    x, y, z = warp.at
    depth, infra, _ = _anatomy_fields(x, y, z, an, warp.outline, with_regions=True)
    lesion = _place_glioma(np.random.default_rng(lesion_ss), geo, depth, _ventricles(x, y, z, an),
                           an.size, an.cerebrum_axes, _intracranial(depth, infra, an, geo))
    # Mass effect: sample the anatomy closer to the lesion centre, pushing tissue outwards.
    return lesion, warp._replace(at=_mass_effect(lesion, geo.coarse_mm, warp.at, depth))


def _paint_disease(t: _Tissue, glioma: _Lesion | None, ms: bool,
                   lesion_ss: np.random.SeedSequence, geo: _Geometry, box: _Box,
                   coarse: _CoarseAnatomy) -> np.ndarray:
    """Paint the glioma or MS lesions into ``t.img`` (in place); return the labels in the brain."""
    seg = np.zeros(box.fine.shape, np.uint8)
    if glioma is not None:
        _paint_lesion(t.img, seg, t.tissue, t.depth, np.maximum(t.gm, t.csf), glioma, box.fine,
                      geo.center, geo.scale, np.random.default_rng(lesion_ss.spawn(1)[0]))
    elif ms:
        _paint_ms(t.img, seg, t.tissue, t.depth, t.vent, t.gm, t.csf,
                  _resample(coarse.infra, geo.coarse, box.fine), geo.vox_mm,
                  np.random.default_rng(lesion_ss))
    seg *= t.brain
    return seg


def _acquire(img: np.ndarray, brain: np.ndarray, an: _Anatomy, vox_mm: float,
             noise_ss: np.random.SeedSequence) -> np.ndarray:
    """Scanner-like finish: blur, noise, integer rounding and clipping, 0 outside ``brain``."""
    # Point-spread blur (real scans are resampled to 1 mm: edges are soft and noise correlated).
    img = ndimage.gaussian_filter(img, sigma=0.85 / vox_mm, mode="nearest", truncate=3.0)
    nrng = np.random.default_rng(noise_ss)
    img += nrng.standard_normal(img.shape, dtype=_F32) * _F32(an.noise * an.wm_level)
    np.rint(img, out=img)
    np.clip(img, 1.0, 32767.0, out=img)
    img *= brain
    return img


def _embed(img: np.ndarray, seg: np.ndarray, brain: np.ndarray, box: _Box,
           dims: tuple[int, int, int]) -> SyntheticSubject:
    """Full-size ``dims`` volumes holding the work-box arrays (zero outside the box)."""
    where = tuple(slice(int(a), int(b)) for a, b in zip(box.lo, box.hi))
    flair = np.zeros(dims, _F32)
    flair[where] = img
    seg_full = np.zeros(dims, np.uint8)
    seg_full[where] = seg
    brain_full = np.zeros(dims, bool)
    brain_full[where] = brain
    return SyntheticSubject(flair, seg_full, brain_full)
