"""Built-in synthetic BraTS-like dataset: phantom skull-stripped axial FLAIR volumes with gliomas.

Each subject is an analytic 3D phantom evaluated on the voxel grid (canonical RAS, 1 mm isotropic):
a cerebrum (ellipsoid with a low-frequency irregular outline, a flat floor and a medial notch that
leaves the temporal lobes), cerebellum and brain stem; a cortical grey-matter ribbon lining the
surface, radial sulci and the interhemispheric fissure; lateral ventricle pair, third and fourth
ventricles; deep grey matter. A smooth random deformation, size, intensity scale, bias field and
noise vary between subjects. Lesioned subjects get one glioma-like lesion in hemispheric white
matter near the middle of the brain's axial extent: an irregular hyperintense oedema (label 2)
around a core made of necrosis / non-enhancing tumour (label 1) and, for most subjects, an
enhancing rim (label 4), with a mild mass effect (BraTS 2017+ label convention, Menze et al.,
IEEE TMI 2015). FLAIR contrast: CSF dark, grey matter brighter than white matter, oedema bright.

Speed: all smooth fields are computed on a coarse grid (4 mm) or a medium grid (2 mm, for the
gyral pattern) and linearly upsampled, and only the brain's bounding box is filled at full
resolution; everything is vectorised float32 numpy.

Layout written by :func:`write_synthetic_dataset` (BraTS 2019 naming)::

    OUT/dataset.json
    OUT/SYN_0000/SYN_0000_flair.nii.gz       int16, raw-like 0..~2000, background exactly 0
    OUT/SYN_0000/SYN_0000_seg.nii.gz         uint8 {0, 1, 2, 4}
    OUT/SYN_0000/SYN_0000_brainmask.nii.gz   uint8 {0, 1}
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from .._atomic import atomic_path, atomic_write_text
from .._progress import drain
from ..config import LESION_PRESETS, SynthConfig
from ..errors import CavlogError

__all__ = [
    "SynthProgress",
    "SynthResult",
    "SyntheticSubject",
    "generate_subject",
    "healthy_flags",
    "iter_subjects",
    "make_synthetic_dataset",
    "subject_seed",
    "synth_affine",
    "write_subject",
    "write_synthetic_dataset",
]

#: Shape of a BraTS volume; phantom anatomy is defined in millimetres for this grid and scaled.
_REF_SHAPE = (240.0, 240.0, 155.0)
_F32 = np.float32
_DEFAULT = SynthConfig()
#: ``dataset.json`` label names per lesion preset (gliomas: BraTS 2017+ convention).
_LABELS = {
    "glioma": {"0": "background", "1": "necrotic / non-enhancing core", "2": "oedema",
               "4": "enhancing tumour"},
    "ms": {"0": "background", "1": "white-matter lesion"},
}


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


class SynthProgress(NamedTuple):
    """Progress of :func:`write_synthetic_dataset`: subject ``done`` of ``total`` is on disk."""

    done: int
    total: int
    case_id: str
    healthy: bool
    lesion_voxels: int


@dataclass(frozen=True)
class SynthResult:
    """What :func:`write_synthetic_dataset` returns: the root, the cases and the metadata file."""

    root: Path
    case_ids: tuple[str, ...]
    healthy: tuple[bool, ...]
    metadata_path: Path
    seconds: float


# --------------------------------------------------------------------------------------------
# Seeds, healthy assignment, geometry
# --------------------------------------------------------------------------------------------


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
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise CavlogError(f"shape={shape!r}: expected three integers (X, Y, Z)") from None
    if len(dims) != 3 or min(dims) < 16:
        raise CavlogError(f"shape={tuple(shape)}: need three sizes, each >= 16")
    if math.prod(dims) > 2**31 - 1:
        raise CavlogError(f"shape={dims}: too many voxels")
    return dims  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Grids and smooth fields
# --------------------------------------------------------------------------------------------


class _Grid(NamedTuple):
    """Regular sub-grid of the voxel grid: point i sits at voxel ``start + i * step``."""

    start: tuple[int, int, int]
    step: int
    shape: tuple[int, int, int]

    def mm(self, center: np.ndarray, scale: float) -> list[np.ndarray]:
        """Broadcastable nominal-mm coordinates ``(x, y, z)`` of the grid points."""
        axes = []
        for ax in range(3):
            v = (self.start[ax] + self.step * np.arange(self.shape[ax]) - center[ax]) / scale
            sh = [1, 1, 1]
            sh[ax] = -1
            axes.append(v.astype(_F32).reshape(sh))
        return axes


def _covering_grid(lo: np.ndarray, hi: np.ndarray, step: int) -> _Grid:
    """Grid of spacing ``step`` whose points cover voxels ``lo..hi-1`` (inclusive of the ends)."""
    n = tuple(math.ceil((b - 1 - a) / step) + 2 for a, b in zip(lo, hi))
    return _Grid(tuple(int(v) for v in lo), step, n)  # type: ignore[arg-type]


def _resample(field: np.ndarray, src: _Grid, dst: _Grid) -> np.ndarray:
    """Separable linear interpolation of ``field`` (on ``src``) at the points of ``dst``."""
    out = field
    for ax in range(3):
        pos = (dst.start[ax] + dst.step * np.arange(dst.shape[ax]) - src.start[ax]) / src.step
        n_in = out.shape[ax]
        if n_in == 1:
            i0 = np.zeros(dst.shape[ax], dtype=np.intp)
            w = np.zeros(dst.shape[ax], dtype=_F32)
            i1 = i0
        else:
            i0 = np.clip(np.floor(pos).astype(np.intp), 0, n_in - 2)
            w = np.clip(pos - i0, 0.0, 1.0).astype(_F32)
            i1 = i0 + 1
        if np.array_equal(pos, np.arange(n_in)):
            continue  # same sampling on this axis
        sh = [1, 1, 1]
        sh[ax] = -1
        a = np.take(out, i0, axis=ax)
        b = np.take(out, i1, axis=ax)
        b -= a
        b *= w.reshape(sh)
        a += b
        out = a
    return out


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise with unit standard deviation (float32)."""
    noise = rng.standard_normal(shape, dtype=_F32)
    if sigma > 0:
        noise = ndimage.gaussian_filter(noise, sigma=sigma, mode="reflect")
    std = float(noise.std())
    return noise / std if std > 0 else noise


def _sheet_distance(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, *,
                    count: int, wavenumber: float) -> np.ndarray:
    """Signed distance (mm) to the zero set of a random-wave field, ``g / |grad g|``.

    A random-wave superposition ``sum_k a_k cos(kappa_k d_k . p + phi_k)`` (mostly one
    wavenumber, plus a weaker octave below that bends the sheets) has a zero set that is a
    labyrinth of sheets spaced about pi / kappa, like the gyral pattern of the cortex. Dividing by
    the gradient keeps the sheets thin where two of them nearly touch.
    """
    n_low = count // 2
    d = rng.standard_normal((count + n_low, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:count] *= wavenumber
    d[count:] *= 0.45 * wavenumber
    amp = np.r_[np.ones(count), np.full(n_low, 0.8)]
    phase = rng.uniform(0, 2 * np.pi, count + n_low)
    g = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape), _F32)
    gx, gy, gz = np.zeros_like(g), np.zeros_like(g), np.zeros_like(g)
    for k in range(count + n_low):
        arg = _F32(d[k, 0]) * x + _F32(d[k, 1]) * y + _F32(d[k, 2]) * z + _F32(phase[k])
        g += _F32(amp[k]) * np.cos(arg)
        s = np.sin(arg, out=arg)
        s *= _F32(-amp[k])
        gx += _F32(d[k, 0]) * s
        gy += _F32(d[k, 1]) * s
        gz += _F32(d[k, 2]) * s
    grad = np.sqrt(gx * gx + gy * gy + gz * gz)
    np.maximum(grad, _F32(0.3 * wavenumber), out=grad)
    return g / grad


def _ellipsoid_depth(x, y, z, center, axes, wobble=None):
    """Depth (mm, positive inside) below the surface of an ellipsoid, along the ray from its centre.

    Returns ``(depth, ux, uy, uz)`` with ``u`` the unit direction in ellipsoid-normalised space.
    ``wobble(ux, uy, uz)`` optionally perturbs the normalised radius of the surface (1 + wobble).
    """
    dx, dy, dz = x - _F32(center[0]), y - _F32(center[1]), z - _F32(center[2])
    nx, ny, nz = dx / _F32(axes[0]), dy / _F32(axes[1]), dz / _F32(axes[2])
    rho = np.sqrt(nx * nx + ny * ny + nz * nz) + _F32(1e-6)
    dist = np.sqrt(dx * dx + dy * dy + dz * dz)
    ray = dist / rho  # radius of the ellipsoid in this direction, mm
    ray = np.where(dist < 1e-3, _F32(min(axes)), ray)
    ux, uy, uz = nx / rho, ny / rho, nz / rho
    surface = _F32(1.0) if wobble is None else _F32(1.0) + wobble(ux, uy, uz)
    return (surface - rho) * ray, ux, uy, uz


def _soft_below(x: np.ndarray, width: float) -> np.ndarray:
    """Partial-volume indicator of ``x < 0`` with a linear ramp of ``width`` (in x units)."""
    out = x * _F32(-1.0 / width)
    out += _F32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


# --------------------------------------------------------------------------------------------
# Subject parameters
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    size: float
    cerebrum_axes: tuple[float, float, float]
    cerebrum_center: tuple[float, float, float]
    floor_z: float
    notch_axes: tuple[float, float, float]
    cerebellum_axes: tuple[float, float, float]
    cerebellum_center: tuple[float, float, float]
    brainstem_axes: tuple[float, float, float]
    vent_scale: float
    vent_z: float
    deform_mm: float
    outline: float
    sulcus_halfwidth: float
    sulcus_depth: float
    cortex: float
    gyral_wavelength: float
    fissure_halfwidth: float
    wm_level: float
    gm_ratio: float
    csf_ratio: float
    dgm_ratio: float
    cerebellum_ratio: float
    bias: float
    noise: float
    csf_rim: float
    texture: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    size = rng.uniform(0.9, 1.05)
    ax = tuple(size * base * rng.uniform(0.96, 1.04) for base in (67.0, 83.0, 57.0))
    return _Anatomy(
        size=size,
        cerebrum_axes=ax,  # type: ignore[arg-type]
        cerebrum_center=(rng.uniform(-2, 2), 4.0 + rng.uniform(-3, 3), 5.0 * size),
        floor_z=-44.0 * size,
        notch_axes=(size * rng.uniform(12, 16), size * 26.0, size * 33.0),
        cerebellum_axes=(size * 31.0, size * rng.uniform(25, 30), size * rng.uniform(19, 23)),
        cerebellum_center=(22.0 * size, -46.0 * size, -45.0 * size),
        brainstem_axes=(size * 14.0, size * 13.0, size * 30.0),
        vent_scale=rng.uniform(0.75, 1.35),
        vent_z=rng.uniform(-1, 4) * size,
        deform_mm=rng.uniform(2.0, 5.0),
        outline=rng.uniform(0.02, 0.045),
        sulcus_halfwidth=rng.uniform(0.5, 1.1),
        sulcus_depth=rng.uniform(12.0, 20.0),
        cortex=rng.uniform(1.8, 2.5),
        gyral_wavelength=rng.uniform(14.0, 17.0),
        fissure_halfwidth=rng.uniform(0.8, 1.6),
        wm_level=rng.uniform(330.0, 560.0),
        gm_ratio=rng.uniform(1.07, 1.17),
        csf_ratio=rng.uniform(0.22, 0.4),
        dgm_ratio=rng.uniform(1.03, 1.1),
        cerebellum_ratio=rng.uniform(1.05, 1.15),
        bias=rng.uniform(0.05, 0.14),
        noise=rng.uniform(0.012, 0.025),
        csf_rim=rng.uniform(0.8, 1.6),
        texture=rng.uniform(0.02, 0.045),
    )


@dataclass(frozen=True)
class _Lesion:
    center: tuple[float, float, float]
    axes: tuple[float, float, float]
    rotation: np.ndarray
    core_center: tuple[float, float, float]
    core_axes: tuple[float, float, float]
    rim: float
    enhancing: bool
    oedema_ratio: float
    core_ratio: float
    rim_ratio: float
    mass: float


def _draw_lesion(rng: np.random.Generator, size: float, z_mid: float, depth_at, vent_at,
                 hemisphere_axes: tuple[float, float, float]) -> _Lesion:
    """Return a BraTS-sized glioma in hemispheric white matter near the brain's axial middle.

    The oedema's nominal radius (24.5-29.5 mm) is drawn so that, clipped to white matter, the lesion
    covers 8-20 % of the brain and 1,000-2,500 mm² per slice on the 10 central slices, as the
    BraTS gliomas do (measured: ``docs/synthetic_data.md``). The centre may sit next to a
    ventricle, which the mass effect then compresses.
    """
    ax_x, ax_y, _ = hemisphere_axes
    radius = rng.uniform(24.5, 29.5) * size
    elong = rng.uniform(0.9, 1.3)
    side = rng.choice((-1.0, 1.0))
    center = (0.0, 0.0, z_mid)
    for attempt in range(64):
        shrink = 1.0 - 0.005 * attempt  # after many rejections accept smaller, deeper lesions
        c = (side * rng.uniform(0.28, 0.5) * ax_x, rng.uniform(-0.45, 0.45) * ax_y,
             z_mid + rng.uniform(-4.0, 4.0))
        if depth_at(c) > 0.55 * radius * shrink + 4.0 and vent_at(c) < -0.2 * radius * shrink:
            center = c
            radius *= shrink
            break
    else:
        radius *= 0.7
        center = (side * 0.4 * ax_x, 0.0, z_mid)
    axes = (radius * rng.uniform(0.8, 1.2), radius * rng.uniform(0.8, 1.2), radius * elong)
    q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    # Mostly in-plane rotation keeps the z extent (hence the slices with lesion) predictable.
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                    [0, 0, 1]])
    rot = rot @ (np.eye(3) * 0.85 + 0.15 * q)
    rot, _ = np.linalg.qr(rot)
    core_frac = rng.uniform(0.35, 0.6)
    core_axes = tuple(a * core_frac * rng.uniform(0.85, 1.15) for a in axes)
    offset = rng.uniform(-0.2, 0.2, 3) * radius
    offset[2] *= 0.5
    return _Lesion(
        center=center,
        axes=axes,  # type: ignore[arg-type]
        rotation=rot.astype(_F32),
        core_center=tuple(float(c + o) for c, o in zip(center, offset)),  # type: ignore[arg-type]
        core_axes=core_axes,  # type: ignore[arg-type]
        rim=rng.uniform(1.5, 3.5) * size,
        enhancing=bool(rng.uniform() < 0.75),
        oedema_ratio=rng.uniform(1.6, 2.2),
        core_ratio=rng.uniform(0.9, 1.9),
        rim_ratio=rng.uniform(1.6, 2.4),
        mass=rng.uniform(0.2, 0.4),
    )


# --------------------------------------------------------------------------------------------
# Anatomy fields
# --------------------------------------------------------------------------------------------


def _anatomy_fields(x, y, z, an: _Anatomy, outline_fn, with_regions: bool):
    """Depth below the brain surface (mm) and helper fields at warped coordinates ``x, y, z``."""
    outer, _, _, _ = _ellipsoid_depth(x, y, z, an.cerebrum_center, an.cerebrum_axes, outline_fn)
    # Flat floor rising to the front and back (orbitofrontal lobes; occipital over the tentorium).
    fy = (y - _F32(an.cerebrum_center[1])) / _F32(an.cerebrum_axes[1])
    outer = np.minimum(outer, z - _F32(an.floor_z) - _F32(20.0 * an.size) * fy * fy)
    # Medial notch under the cerebrum separates the temporal lobes around the brain stem.
    notch, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, 10.0 * an.size, -62.0 * an.size),
                                      an.notch_axes)
    ce = np.minimum(outer, -notch)
    cbx, cby, cbz = an.cerebellum_center
    cb_l, _, _, _ = _ellipsoid_depth(x, y, z, (-cbx, cby, cbz), an.cerebellum_axes)
    cb_r, _, _, _ = _ellipsoid_depth(x, y, z, (cbx, cby, cbz), an.cerebellum_axes)
    cb = np.maximum(cb_l, cb_r)
    bs, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, -12.0 * an.size, -36.0 * an.size),
                                   an.brainstem_axes)
    depth = np.maximum(np.maximum(ce, cb), bs)
    if not with_regions:
        return depth, None, None
    # 1 in the cerebellum and brain stem, 0 in the cerebrum, blended over ~4 mm.
    infra = np.clip(_F32(0.5) + (np.maximum(cb, bs) - ce) / _F32(4.0), 0.0, 1.0)
    return depth, infra, outer


def _ventricles(x, y, z, an: _Anatomy) -> np.ndarray:
    """Depth (mm, positive inside) into the ventricular system."""
    s, v = an.size, an.vent_scale
    yv = _F32(2.0 * s)
    dy = (y - yv) / _F32(30.0 * s)
    # Lateral ventricles: bananas whose ends (frontal and occipital horns) diverge from the midline.
    spread = _F32(s * (5.0 + 2.0 * v)) + _F32(9.0 * s) * dy * dy
    zc = _F32(an.vent_z) - _F32(6.0 * s) * np.minimum(dy, 0) ** 2  # atria dip posteriorly
    axes = (4.2 * s * v, 30.0 * s, 7.5 * s * (0.7 + 0.3 * v))
    out = None
    for side in (-1.0, 1.0):
        d, _, _, _ = _ellipsoid_depth(x - _F32(side) * spread, y, z - zc + _F32(an.vent_z),
                                      (0.0, float(yv), an.vent_z), axes)
        out = d if out is None else np.maximum(out, d)
    third, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, -2.0 * s, an.vent_z - 12.0 * s),
                                      (1.2 * s * v, 13.0 * s, 8.0 * s))
    fourth, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, -31.0 * s, -42.0 * s),
                                       (4.0 * s, 3.0 * s, 6.0 * s))
    return np.maximum(np.maximum(out, third), fourth)


def _deep_grey(x, y, z, an: _Anatomy) -> np.ndarray:
    """Depth (mm, positive inside) into thalami, lentiform nuclei and caudate heads."""
    s = an.size
    out = None
    zc = an.vent_z - 10.0 * s
    for side in (-1.0, 1.0):
        for center, axes in (((10.0, -12.0, zc), (8.0, 12.0, 9.0)),
                             ((23.0, 4.0, zc), (5.5, 15.0, 9.0)),
                             ((12.0 + 2.0 * an.vent_scale, 19.0, zc + 8.0), (4.5, 8.0, 8.0))):
            c = (side * center[0] * s, center[1] * s, center[2])
            d, _, _, _ = _ellipsoid_depth(x, y, z, c, tuple(a * s for a in axes))
            out = d if out is None else np.maximum(out, d)
    return out


# --------------------------------------------------------------------------------------------
# The generator
# --------------------------------------------------------------------------------------------


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
    dims = _check_shape(shape)
    if int(seed) != seed or seed < 0:
        raise CavlogError(f"seed={seed!r}: must be a non-negative integer")
    if lesions not in LESION_PRESETS:
        raise CavlogError(f"lesions={lesions!r}: expected one of {', '.join(LESION_PRESETS)}")
    anat_ss, lesion_ss, noise_ss = np.random.SeedSequence(int(seed)).spawn(3)
    rng = np.random.default_rng(anat_ss)
    an = _draw_anatomy(rng)

    scale = min(d / r for d, r in zip(dims, _REF_SHAPE))
    center = (np.asarray(dims, dtype=float) - 1) / 2
    vox_mm = 1.0 / scale  # size of one voxel in nominal mm
    cstep = max(1, round(4 * scale))
    mstep = max(1, round(2 * scale))

    # Coarse grid over the whole volume: deformation, outline, brain extent.
    coarse = _covering_grid(np.zeros(3, int), np.asarray(dims), cstep)
    cx, cy, cz = coarse.mm(center, scale)
    sigma = 14.0 * scale / cstep
    deform = [_smooth_noise(rng, coarse.shape, sigma) * _F32(an.deform_mm) for _ in range(3)]
    wob1 = _wobble_fn(rng, an.outline, 3.0, 8)
    wob2 = _wobble_fn(rng, an.outline * 0.4, 7.0, 8)

    def outline(ux, uy, uz):
        return wob1(ux, uy, uz) + wob2(ux, uy, uz)

    wx, wy, wz = cx + deform[0], cy + deform[1], cz + deform[2]
    depth0, _, _ = _anatomy_fields(wx, wy, wz, an, outline, with_regions=False)

    lesion: _Lesion | None = None
    if not healthy and lesions == "glioma":
        lrng = np.random.default_rng(lesion_ss)
        inside_z = np.nonzero((depth0 > 0).any(axis=(0, 1)))[0]
        z_lo, z_hi = coarse.start[2] + cstep * inside_z[[0, -1]]
        z_mid = ((z_lo + z_hi) / 2 - center[2]) / scale
        vent0 = _ventricles(wx, wy, wz, an)

        def sample(field):
            def at(c):
                idx = [int(np.clip(round((c[a] * scale + center[a]) / cstep), 0,
                                   coarse.shape[a] - 1)) for a in range(3)]
                return float(field[tuple(idx)])
            return at

        lesion = _draw_lesion(lrng, an.size, z_mid, sample(depth0), sample(vent0),
                              an.cerebrum_axes)
        # Mass effect: sample the anatomy closer to the lesion centre, pushing tissue outwards.
        dx, dy, dz = cx - _F32(lesion.center[0]), cy - _F32(lesion.center[1]), cz - _F32(
            lesion.center[2])
        s2 = _F32(2 * (1.3 * max(lesion.axes)) ** 2)
        push = _F32(lesion.mass) * np.exp(-(dx * dx + dy * dy + dz * dz) / s2)
        # The skull holds the outline: the push fades to 0 over the outer 15 mm of the brain, so
        # the tumour displaces inner structures (ventricles, deep grey matter), not the surface.
        push *= np.clip(depth0 / _F32(15.0), 0.0, 1.0)
        wx, wy, wz = wx - push * dx, wy - push * dy, wz - push * dz

    depth_c, infra_c, outer_c = _anatomy_fields(wx, wy, wz, an, outline, with_regions=True)
    vent_c = _ventricles(wx, wy, wz, an)
    dgm_c = _deep_grey(wx, wy, wz, an)
    # Sulci only in the cerebrum: push their allowed depth below zero elsewhere.
    sulc_c = outer_c - _F32(an.sulcus_depth) * (1 + 0.4 * _smooth_noise(rng, coarse.shape,
                                                                        0.5 * sigma))
    sulc_c += infra_c * _F32(1000.0)
    # The fissure reaches down to the corpus callosum: no fissure inside a sagittal ellipse
    # around the callosum and diencephalon, so mid-level slices show it only front and back.
    cc_y = (wy + _F32(2.0 * an.size)) / _F32(38.0 * an.size)
    cc_z = (wz - _F32(an.vent_z - 20.0 * an.size)) / _F32(34.0 * an.size)
    fiss_c = (_F32(1.0) - np.sqrt(cc_y * cc_y + cc_z * cc_z)) * _F32(30.0 * an.size)
    fiss_c = np.maximum(fiss_c, infra_c * _F32(1000.0))
    bias_c = np.exp(_F32(an.bias) * _smooth_noise(rng, coarse.shape, 2 * sigma)
                    + _F32(an.bias * 0.5 / 80.0) * (cy * _F32(rng.uniform(-1, 1))
                                                    + cz * _F32(rng.uniform(-1, 1))))

    # Work box: the brain's bounding box (plus a margin), the only part filled at full resolution.
    inside = np.argwhere(depth_c > -2.0 * vox_mm * cstep)
    lo = np.maximum(coarse.start + cstep * (inside.min(axis=0) - 1), 0)
    hi = np.minimum(coarse.start + cstep * (inside.max(axis=0) + 2), dims)
    fine = _Grid(tuple(int(v) for v in lo), 1, tuple(int(v) for v in hi - lo))
    mid = _covering_grid(lo, hi, mstep)

    # Medium grid: gyral pattern (radial sheets), tissue base intensity.
    mx = _resample(wx, coarse, mid)
    my = _resample(wy, coarse, mid)
    mz = _resample(wz, coarse, mid)
    _, ux, uy, uz = _ellipsoid_depth(mx, my, mz, an.cerebrum_center, an.cerebrum_axes)
    # Sulci are sheets roughly perpendicular to the surface: a random-wave field of the direction
    # (radial sheets), tilted by a fraction of the position so they bend with depth.
    r0, tilt = _F32(70.0 * an.size), _F32(0.5)
    qx = ux * r0 + tilt * (mx - _F32(an.cerebrum_center[0]) - ux * r0)
    qy = uy * r0 + tilt * (my - _F32(an.cerebrum_center[1]) - uy * r0)
    qz = uz * r0 + tilt * (mz - _F32(an.cerebrum_center[2]) - uz * r0)
    kappa = 2 * np.pi / (an.gyral_wavelength * an.size)
    gyri = _sheet_distance(rng, qx, qy, qz, count=12, wavenumber=kappa)
    del qx, qy, qz
    infra_m = _resample(infra_c, coarse, mid)
    dgm_m = np.clip(_F32(0.5) + _resample(dgm_c, coarse, mid) / _F32(3.0), 0.0, 1.0)
    cb_r = np.sqrt((np.abs(mx) - _F32(an.cerebellum_center[0])) ** 2
                   + (my - _F32(an.cerebellum_center[1])) ** 2
                   + (mz - _F32(an.cerebellum_center[2])) ** 2)
    folia = _F32(0.035) * np.cos(cb_r * _F32(2 * np.pi / (6.0 * an.size))
                                 + _F32(2.0) * _smooth_noise(rng, mid.shape, 4.0 * scale / mstep))
    texture = _smooth_noise(rng, mid.shape, 2.5 * scale / mstep) * _F32(an.texture)
    base = (_F32(1.0) + texture + dgm_m * _F32(an.dgm_ratio - 1) * (1 - infra_m)
            + infra_m * (_F32(an.cerebellum_ratio - 1) + folia))
    base *= _resample(bias_c, coarse, mid) * _F32(an.wm_level)
    del mx, my, mz, ux, uy, uz, infra_m, dgm_m, cb_r, folia, texture

    # Full resolution inside the work box.
    depth = _resample(depth_c, coarse, fine)
    brain = depth > 0
    pv = vox_mm  # partial-volume ramp: one voxel
    # Distances (mm, <= 0 inside) to sulcal and fissure CSF: a sheet that stops at its depth.
    d_sulc = np.abs(_resample(gyri, mid, fine))
    # Sulci open up towards the surface (wedge-shaped CSF), widest at the brain's edge.
    opening = np.clip(depth * _F32(-1.0 / 5.0) + _F32(1.0), 0.0, 1.0)
    opening *= _F32(0.8 * an.sulcus_halfwidth + 0.3)
    opening += _F32(an.sulcus_halfwidth)
    d_sulc -= opening
    del opening
    sulc_allowed = _resample(sulc_c, coarse, fine)
    np.maximum(d_sulc, sulc_allowed, out=d_sulc)
    d_fiss = np.abs(_resample(wx - _F32(an.cerebrum_center[0]), coarse, fine))
    d_fiss -= _F32(an.fissure_halfwidth)
    np.maximum(d_fiss, _resample(fiss_c, coarse, fine), out=d_fiss)
    vent = _resample(vent_c, coarse, fine)
    d_csf = np.minimum(d_sulc, d_fiss)
    np.minimum(d_csf, -vent, out=d_csf)
    # Subarachnoid CSF at the surface, inside the brain mask as in skull-stripped BraTS masks.
    np.minimum(d_csf, depth - _F32(an.csf_rim), out=d_csf)
    csf = _soft_below(d_csf, pv)
    # Cortical ribbon: grey matter within `cortex` mm of the surface, a sulcus or the fissure.
    d_gm = np.minimum(d_sulc, d_fiss, out=d_sulc)
    np.minimum(d_gm, depth, out=d_gm)
    d_gm -= _F32(an.cortex)
    gm = _soft_below(d_gm, pv)
    gm *= 1 - csf
    del d_fiss, d_csf, d_gm
    tissue = _resample(base, mid, fine)
    img = gm * _F32(an.gm_ratio - 1)
    img += csf * _F32(an.csf_ratio - 1)
    img += 1
    img *= tissue

    seg = np.zeros(fine.shape, np.uint8)
    if lesion is not None:
        _paint_lesion(img, seg, tissue, depth, np.maximum(gm, csf), lesion, fine, center, scale,
                      np.random.default_rng(lesion_ss.spawn(1)[0]))
    elif not healthy and lesions == "ms":
        _paint_ms(img, seg, tissue, depth, vent, gm, csf, _resample(infra_c, coarse, fine),
                  vox_mm, np.random.default_rng(lesion_ss))
    del gm, csf
    # Point-spread blur (real scans are resampled to 1 mm: edges are soft and noise correlated).
    img = ndimage.gaussian_filter(img, sigma=0.85 / vox_mm, mode="nearest", truncate=3.0)
    nrng = np.random.default_rng(noise_ss)
    img += nrng.standard_normal(fine.shape, dtype=_F32) * _F32(an.noise * an.wm_level)
    np.rint(img, out=img)
    np.clip(img, 1.0, 32767.0, out=img)
    img *= brain
    seg *= brain

    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    flair = np.zeros(dims, _F32)
    flair[box] = img
    seg_full = np.zeros(dims, np.uint8)
    seg_full[box] = seg
    brain_full = np.zeros(dims, bool)
    brain_full[box] = brain
    return SyntheticSubject(flair, seg_full, brain_full)


def _wobble_fn(rng: np.random.Generator, amplitude: float, wavenumber: float, count: int):
    """Low-frequency angular noise on the unit sphere (a function of the direction ``u``)."""
    d = rng.standard_normal((count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d *= wavenumber
    phase = rng.uniform(0, 2 * np.pi, count)
    norm = amplitude * math.sqrt(2.0 / count)

    def fn(ux, uy, uz):
        out = None
        for k in range(count):
            t = np.cos(_F32(d[k, 0]) * ux + _F32(d[k, 1]) * uy + _F32(d[k, 2]) * uz
                       + _F32(phase[k]))
            out = t if out is None else out + t
        return out * _F32(norm)

    return fn


def _paint_lesion(img, seg, tissue, depth, not_wm, les: _Lesion, fine: _Grid, center, scale,
                  rng) -> None:
    """Write the lesion's labels and FLAIR intensities into the work-box arrays (in place)."""
    reach = 1.65 * max(les.axes) + 2.0  # the oedema's radius is at most 1.6 x its axes
    lo = np.array([math.floor((les.center[a] - reach) * scale + center[a]) - fine.start[a]
                   for a in range(3)])
    hi = np.array([math.ceil((les.center[a] + reach) * scale + center[a]) + 1 - fine.start[a]
                   for a in range(3)])
    lo = np.clip(lo, 0, fine.shape)
    hi = np.clip(hi, 0, fine.shape)
    if np.any(hi <= lo):
        return
    sub = _Grid(tuple(int(fine.start[a] + lo[a]) for a in range(3)), 1,
                tuple(int(v) for v in hi - lo))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    x, y, z = sub.mm(center, scale)
    rot = les.rotation
    # Rotate offsets into the lesion frame; sizes are along the rotated axes.
    dx, dy, dz = x - _F32(les.center[0]), y - _F32(les.center[1]), z - _F32(les.center[2])
    rx = rot[0, 0] * dx + rot[1, 0] * dy + rot[2, 0] * dz
    ry = rot[0, 1] * dx + rot[1, 1] * dy + rot[2, 1] * dz
    rz = rot[0, 2] * dx + rot[1, 2] * dy + rot[2, 2] * dz
    wob_o1 = _wobble_fn(rng, 0.3, 2.5, 8)
    wob_o2 = _wobble_fn(rng, 0.12, 6.0, 10)
    oed, _, _, _ = _ellipsoid_depth(
        rx, ry, rz, (0.0, 0.0, 0.0), les.axes,
        lambda a, b, c: np.clip(wob_o1(a, b, c) + wob_o2(a, b, c), -0.45, 0.6))
    cc = np.asarray(les.core_center) - np.asarray(les.center)
    core, _, _, _ = _ellipsoid_depth(dx, dy, dz, tuple(cc), les.core_axes,
                                     _wobble_fn(rng, 0.15, 3.0, 6))
    d = depth[box]
    # Oedema spreads in white matter: not into the cortical ribbon, sulci or ventricles.
    wm = not_wm[box] < 0.5
    oedema = (oed > 0) & wm
    tumour = (core > 0) & (d > 1.0)
    labels = np.where(oedema, np.uint8(2), np.uint8(0))
    labels[tumour] = 1
    if les.enhancing:
        labels[tumour & (core < les.rim)] = 4
    seg[box] = labels

    heterogeneity = 1 + 0.1 * _smooth_noise(rng, sub.shape, 2.0 * scale)
    t = tissue[box]
    # Hyperintensity ramps up over ~4 mm inside the oedema border (fuzzy, as in real scans).
    w_oed = np.clip(_F32(0.2) + oed / _F32(5.0), 0.0, 1.0) * oedema
    target = t * _F32(les.oedema_ratio) * heterogeneity
    region = img[box]
    region += (target - region) * w_oed
    w_core = np.clip(_F32(0.5) + core / _F32(1.5), 0.0, 1.0) * (d > 1.0)
    core_level = np.where(les.enhancing & (core < les.rim), _F32(les.rim_ratio),
                          _F32(les.core_ratio)).astype(_F32)
    region += (t * core_level * heterogeneity - region) * w_core
    img[box] = region


def _paint_ms(img, seg, tissue, depth, vent, gm, csf, infra, vox_mm: float, rng) -> None:
    """Many small MS-like FLAIR-hyperintense white-matter lesions (label 1), in place.

    Ovoid lesions of 1.5-7 mm nominal radius (log-normal), about half periventricular (centre
    1-5 mm outside a lateral ventricle; elongated, like Dawson's fingers), a quarter
    juxtacortical (centre within 2 mm of the cortical ribbon) and a quarter in deep white matter,
    all in the cerebrum and clipped to white matter. On the 10 central slices they cover about
    0.5-3 % of the brain (McDonald criteria's topography; Filippi et al., Lancet Neurol 2016).
    """
    wm = (gm < 0.5) & (csf < 0.5) & (infra < 0.5) & (depth > 2.0)
    near_gm = ndimage.binary_dilation(gm > 0.5, iterations=max(1, round(2.0 / vox_mm)))
    zones = (
        wm & (vent < -1.0) & (vent > -5.0),                       # periventricular
        wm & near_gm & (depth > 4.0),                              # juxtacortical
        wm & (vent < -8.0) & ~near_gm & (depth > 12.0),            # deep white matter
    )
    counts = rng.multinomial(int(rng.integers(26, 55)), (0.55, 0.25, 0.2))
    shape = np.asarray(img.shape)
    for zone, count in zip(zones, counts):
        candidates = np.flatnonzero(zone)
        if candidates.size == 0 or count == 0:
            continue
        for flat in rng.choice(candidates, size=int(count), replace=True):
            c = np.asarray(np.unravel_index(flat, img.shape))
            r = float(np.clip(rng.lognormal(np.log(3.6), 0.4), 1.5, 7.0)) / vox_mm
            axes = r * rng.uniform(0.7, 1.1, 3)
            axes[rng.integers(3)] *= rng.uniform(1.2, 1.8)  # ovoid
            q, _ = np.linalg.qr(rng.standard_normal((3, 3)))
            half = math.ceil(axes.max()) + 2
            lo = np.maximum(c - half, 0)
            hi = np.minimum(c + half + 1, shape)
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
            grids = np.meshgrid(*(np.arange(a, b, dtype=_F32) - _F32(ci)
                                  for a, b, ci in zip(lo, hi, c)), indexing="ij")
            rho2 = sum(((q[0, k] * grids[0] + q[1, k] * grids[1] + q[2, k] * grids[2])
                        / _F32(axes[k])) ** 2 for k in range(3))
            inside = (rho2 < 1.0) & wm[box]
            # Hyperintensity fades over the outer third of the radius (partial volume).
            weight = np.clip((1.0 - np.sqrt(rho2)) * 3.0, 0.0, 1.0) * inside
            region = img[box]
            target = tissue[box] * _F32(rng.uniform(1.45, 1.9))
            region += (target - region) * weight.astype(_F32)
            seg[box][inside & (weight > 0.15)] = 1


# --------------------------------------------------------------------------------------------
# Writing a dataset
# --------------------------------------------------------------------------------------------


def _save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    image = nib.Nifti1Image(array, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        # gzip level 1: ~5x faster than level 9 for ~10 % larger files.
        nib.save(image, tmp)


def _case_id(index: int) -> str:
    return f"SYN_{index:04d}"


def write_subject(subject: SyntheticSubject, folder: str | Path, case_id: str) -> Path:
    """Write ``<folder>/<case_id>_{flair,seg,brainmask}.nii.gz`` (BraTS 2019 naming, atomic).

    FLAIR is stored as int16 (raw-BraTS-like), seg and brain mask as uint8, with the 1 mm RAS
    affine of :func:`synth_affine`. Returns the folder.
    """
    folder = Path(folder)
    affine = synth_affine(subject.flair.shape)
    _save_nifti(subject.flair.astype(np.int16), affine, folder / f"{case_id}_flair.nii.gz")
    _save_nifti(subject.seg, affine, folder / f"{case_id}_seg.nii.gz")
    _save_nifti(subject.brain.astype(np.uint8), affine, folder / f"{case_id}_brainmask.nii.gz")
    return folder


def _check_output(out: Path, n: int) -> None:
    if out.exists() and not out.is_dir():
        raise CavlogError(f"{out}: exists and is not a directory")
    if out.is_dir():
        stale = sorted(p.name for p in out.glob("SYN_*")
                       if p.is_dir() and p.name[4:].isdigit() and int(p.name[4:]) >= n)
        if stale:
            raise CavlogError(f"{out}: already holds {len(stale)} synthetic case(s) beyond "
                              f"SYN_{n - 1:04d} (e.g. {stale[0]}); use an empty folder")


def write_synthetic_dataset(out: str | Path, cfg: SynthConfig = _DEFAULT
                            ) -> Generator[SynthProgress, None, SynthResult]:
    """Generate and write a synthetic BraTS-like dataset; a generator of progress events.

    Parameters
    ----------
    out : path
        Output root (created). Existing ``SYN_XXXX`` cases of the same indices are overwritten;
        a file at ``out`` or cases beyond ``cfg.subjects`` raise :class:`CavlogError`.
    cfg : SynthConfig
        ``subjects``, ``seed``, ``shape``, ``healthy_fraction``. Subject k uses
        :func:`subject_seed` ``(cfg.seed, k)`` and is healthy per :func:`healthy_flags`, so it is
        identical whatever ``cfg.subjects``.

    Yields
    ------
    SynthProgress
        After each subject is written.

    Returns
    -------
    SynthResult
        Via ``StopIteration.value`` (or use :func:`make_synthetic_dataset`). ``out/dataset.json``
        holds the configuration and per-subject metadata (seed, healthy, voxel counts, slices).

    The checks run when this function is called, before the first ``next``.
    """
    out = Path(out).expanduser()
    if not isinstance(cfg, SynthConfig):
        raise CavlogError(f"cfg={cfg!r}: expected a SynthConfig")
    shape = _check_shape(cfg.shape)
    _check_output(out, cfg.subjects)
    return _write(out, cfg, shape)


def _write(out: Path, cfg: SynthConfig, shape: tuple[int, int, int]
           ) -> Generator[SynthProgress, None, SynthResult]:
    t0 = time.perf_counter()
    flags = healthy_flags(cfg.subjects, cfg.healthy_fraction)
    cases = []
    for k in range(cfg.subjects):
        case_id = _case_id(k)
        seed = subject_seed(cfg.seed, k)
        subject = generate_subject(seed, shape, healthy=bool(flags[k]), lesions=cfg.lesions)
        write_subject(subject, out / case_id, case_id)
        lesion = subject.seg > 0
        z_lesion = np.nonzero(lesion.any(axis=(0, 1)))[0]
        z_brain = np.nonzero(subject.brain.any(axis=(0, 1)))[0]
        cases.append({
            "case_id": case_id,
            "seed": seed,
            "healthy": bool(flags[k]),
            "brain_voxels": int(subject.brain.sum()),
            "lesion_voxels": int(lesion.sum()),
            "label_voxels": {str(v): int((subject.seg == v).sum()) for v in (1, 2, 4)},
            "brain_slices": [int(z_brain[0]), int(z_brain[-1])] if z_brain.size else None,
            "lesion_slices": [int(z_lesion[0]), int(z_lesion[-1])] if z_lesion.size else None,
        })
        yield SynthProgress(k + 1, cfg.subjects, case_id, bool(flags[k]), int(lesion.sum()))
    meta = {
        "name": "cavlog synthetic BraTS-like FLAIR",
        "generator": "cavlog_core.data.synth",
        "seed": cfg.seed,
        "subjects": cfg.subjects,
        "shape": list(shape),
        "spacing_mm": [1.0, 1.0, 1.0],
        "healthy_fraction": cfg.healthy_fraction,
        "lesions": cfg.lesions,
        "labels": _LABELS[cfg.lesions],
        "cases": cases,
    }
    metadata_path = out / "dataset.json"
    atomic_write_text(metadata_path, json.dumps(meta, indent=1) + "\n")
    return SynthResult(
        root=out,
        case_ids=tuple(c["case_id"] for c in cases),
        healthy=tuple(c["healthy"] for c in cases),
        metadata_path=metadata_path,
        seconds=time.perf_counter() - t0,
    )


def make_synthetic_dataset(out: str | Path, cfg: SynthConfig = _DEFAULT) -> SynthResult:
    """Headless :func:`write_synthetic_dataset`: drain the progress events, return the result."""
    return drain(write_synthetic_dataset(out, cfg))


def iter_subjects(cfg: SynthConfig = _DEFAULT) -> Iterator[tuple[str, SyntheticSubject]]:
    """``(case_id, subject)`` for the dataset ``cfg`` describes, in memory (nothing written)."""
    flags = healthy_flags(cfg.subjects, cfg.healthy_fraction)
    shape = _check_shape(cfg.shape)
    for k in range(cfg.subjects):
        yield _case_id(k), generate_subject(subject_seed(cfg.seed, k), shape,
                                            healthy=bool(flags[k]), lesions=cfg.lesions)
