"""One phantom subject: seeds, the healthy / lesioned assignment, geometry and the generator.

Each subject is an analytic 3D phantom evaluated on the voxel grid (canonical RAS, 1 mm
isotropic): the healthy anatomy of :mod:`.anatomy` plus a cortical grey-matter ribbon lining the
surface, radial sulci and the interhemispheric fissure; a smooth random deformation, size,
intensity scale, bias field and noise vary between subjects. Lesioned subjects get the lesions of
:mod:`.lesions`. FLAIR contrast: CSF dark, grey matter brighter than white matter, oedema bright.
Only the brain's bounding box is filled at full resolution; everything is vectorised float32
numpy.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from ..config import LESION_PRESETS, SynthConfig
from ..errors import CavlogError
from .anatomy import _anatomy_fields, _deep_grey, _draw_anatomy, _ventricles
from .fields import (
    _F32,
    _covering_grid,
    _ellipsoid_depth,
    _Grid,
    _resample,
    _sheet_distance,
    _smooth_noise,
    _soft_below,
    _wobble_fn,
)
from .lesions import PointField, _draw_lesion, _Lesion, _paint_lesion, _paint_ms

__all__ = ["SyntheticSubject", "generate_subject", "healthy_flags", "subject_seed", "synth_affine"]

#: Shape of a BraTS volume; phantom anatomy is defined in millimetres for this grid and scaled.
_REF_SHAPE = (240.0, 240.0, 155.0)
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

    def outline(ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
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

        def sample(field: np.ndarray) -> PointField:
            def at(c: tuple[float, float, float]) -> float:
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
