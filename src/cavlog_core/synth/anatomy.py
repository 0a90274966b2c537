"""Healthy phantom anatomy: the random parameters of a brain and its analytic depth fields.

A cerebrum (ellipsoid with a low-frequency irregular outline, a flat floor and a medial notch that
leaves the temporal lobes), cerebellum and brain stem; lateral ventricle pair, third and fourth
ventricles; deep grey matter (thalami, lentiform nuclei, caudate heads). Each structure is a
signed depth field in nominal mm (positive inside), evaluated at coordinates warped by a smooth
random deformation on the coarse grid; the gyral pattern and base intensity follow on the medium
grid, and the cortical ribbon, sulci, fissure and CSF at full resolution inside the work box
(steps run in this order by :func:`~cavlog_core.synth.generate_subject`). The brain mask is the
intracranial space, as a skull-stripped BraTS mask: the tissue plus the basal cisterns and the CSF
around the cerebellum and brain stem (:func:`_intracranial`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, overload

import numpy as np
from scipy import ndimage

from .fields import (
    _F32,
    Wobble,
    _Box,
    _ellipsoid_depth,
    _Geometry,
    _Grid,
    _resample,
    _sheet_distance,
    _smooth_noise,
    _soft_below,
    _wobble_fn,
    _Xyz,
)

#: Version of the phantom anatomy, written to ``dataset.json``: a dataset made by another version
#: differs voxel for voxel (2: the brain mask holds the basal cisterns and infratentorial CSF).
ANATOMY_VERSION = 2


@dataclass(frozen=True)
class _Anatomy:
    """One subject's anatomy: sizes and positions (nominal mm), contrasts (x white matter)."""

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
    cistern_shell: float


def _draw_anatomy(rng: np.random.Generator) -> _Anatomy:
    """Draw one subject's anatomy (sizes, shapes, tissue contrasts, bias, noise) from ``rng``."""
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
        cistern_shell=rng.uniform(1.5, 3.0),
    )


@overload
def _anatomy_fields(x: np.ndarray, y: np.ndarray, z: np.ndarray, an: _Anatomy,
                    outline_fn: Wobble, with_regions: Literal[False]
                    ) -> tuple[np.ndarray, None, None]: ...


@overload
def _anatomy_fields(x: np.ndarray, y: np.ndarray, z: np.ndarray, an: _Anatomy,
                    outline_fn: Wobble, with_regions: Literal[True]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def _anatomy_fields(x: np.ndarray, y: np.ndarray, z: np.ndarray, an: _Anatomy,
                    outline_fn: Wobble, with_regions: bool
                    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
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


def _ventricles(x: np.ndarray, y: np.ndarray, z: np.ndarray, an: _Anatomy) -> np.ndarray:
    """Depth (mm, positive inside) into the ventricular system."""
    s, v = an.size, an.vent_scale
    yv = _F32(2.0 * s)
    dy = (y - yv) / _F32(30.0 * s)
    # Lateral ventricles: bananas whose ends (frontal and occipital horns) diverge from the midline.
    spread = _F32(s * (5.0 + 2.0 * v)) + _F32(9.0 * s) * dy * dy
    zc = _F32(an.vent_z) - _F32(6.0 * s) * np.minimum(dy, 0) ** 2  # atria dip posteriorly
    axes = (4.2 * s * v, 30.0 * s, 7.5 * s * (0.7 + 0.3 * v))
    out: np.ndarray | None = None
    for side in (-1.0, 1.0):
        d, _, _, _ = _ellipsoid_depth(x - _F32(side) * spread, y, z - zc + _F32(an.vent_z),
                                      (0.0, float(yv), an.vent_z), axes)
        out = d if out is None else np.maximum(out, d)
    third, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, -2.0 * s, an.vent_z - 12.0 * s),
                                      (1.2 * s * v, 13.0 * s, 8.0 * s))
    fourth, _, _, _ = _ellipsoid_depth(x, y, z, (0.0, -31.0 * s, -42.0 * s),
                                       (4.0 * s, 3.0 * s, 6.0 * s))
    assert out is not None
    return np.maximum(np.maximum(out, third), fourth)


def _deep_grey(x: np.ndarray, y: np.ndarray, z: np.ndarray, an: _Anatomy) -> np.ndarray:
    """Depth (mm, positive inside) into thalami, lentiform nuclei and caudate heads."""
    s = an.size
    out: np.ndarray | None = None
    zc = an.vent_z - 10.0 * s
    for side in (-1.0, 1.0):
        for center, axes in (((10.0, -12.0, zc), (8.0, 12.0, 9.0)),
                             ((23.0, 4.0, zc), (5.5, 15.0, 9.0)),
                             ((12.0 + 2.0 * an.vent_scale, 19.0, zc + 8.0), (4.5, 8.0, 8.0))):
            c = (side * center[0] * s, center[1] * s, center[2])
            d, _, _, _ = _ellipsoid_depth(x, y, z, c, tuple(a * s for a in axes))
            out = d if out is None else np.maximum(out, d)
    assert out is not None
    return out



class _Warp(NamedTuple):
    """Warped nominal-mm coordinates of the coarse grid and the cerebrum's wobbly outline."""

    at: _Xyz
    outline: Wobble


class _CoarseAnatomy(NamedTuple):
    """Anatomy on the coarse grid (mm): depths, sulcus / fissure limits, bias, warped coordinates.

    ``infra`` is 1 in the cerebellum and brain stem; ``sulc`` and ``fiss`` are how far (below 0
    where none) sulci and the fissure reach; ``bias`` is the multiplicative bias field; ``icv``
    is the depth into the intracranial space (tissue plus cisterns: the brain mask).
    """

    at: _Xyz
    depth: np.ndarray
    icv: np.ndarray
    infra: np.ndarray
    vent: np.ndarray
    dgm: np.ndarray
    sulc: np.ndarray
    fiss: np.ndarray
    bias: np.ndarray


class _Tissue(NamedTuple):
    """Healthy full-resolution phantom in the work box; ``gm`` and ``csf`` are fractions."""

    img: np.ndarray
    tissue: np.ndarray
    depth: np.ndarray
    brain: np.ndarray
    vent: np.ndarray
    gm: np.ndarray
    csf: np.ndarray


def _coarse_sigma(geo: _Geometry) -> float:
    """Correlation length of the deformation (14 nominal mm) in coarse-grid points."""
    return 14.0 * geo.scale / geo.coarse.step


def _warp(rng: np.random.Generator, an: _Anatomy, geo: _Geometry) -> _Warp:
    """Draw the smooth random deformation of the coarse grid and the outline's wobble."""
    sigma = _coarse_sigma(geo)
    deform = [_smooth_noise(rng, geo.coarse.shape, sigma) * _F32(an.deform_mm) for _ in range(3)]
    wob1 = _wobble_fn(rng, an.outline, 3.0, 8)
    wob2 = _wobble_fn(rng, an.outline * 0.4, 7.0, 8)

    def outline(ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        return wob1(ux, uy, uz) + wob2(ux, uy, uz)

    c = geo.coarse_mm
    return _Warp(_Xyz(c.x + deform[0], c.y + deform[1], c.z + deform[2]), outline)


def _csf_limits(rng: np.random.Generator, an: _Anatomy, geo: _Geometry, at: _Xyz,
                infra: np.ndarray, outer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How deep sulci and the interhemispheric fissure may reach (coarse grid, mm)."""
    # Sulci only in the cerebrum: push their allowed depth below zero elsewhere.
    sulc = outer - _F32(an.sulcus_depth) * (1 + 0.4 * _smooth_noise(rng, geo.coarse.shape,
                                                                    0.5 * _coarse_sigma(geo)))
    sulc += infra * _F32(1000.0)
    # The fissure reaches down to the corpus callosum: no fissure inside a sagittal ellipse
    # around the callosum and diencephalon, so mid-level slices show it only front and back.
    cc_y = (at.y + _F32(2.0 * an.size)) / _F32(38.0 * an.size)
    cc_z = (at.z - _F32(an.vent_z - 20.0 * an.size)) / _F32(34.0 * an.size)
    fiss = (_F32(1.0) - np.sqrt(cc_y * cc_y + cc_z * cc_z)) * _F32(30.0 * an.size)
    return sulc, np.maximum(fiss, infra * _F32(1000.0))


def _bias_field(rng: np.random.Generator, an: _Anatomy, geo: _Geometry) -> np.ndarray:
    """Smooth multiplicative bias field with a random linear gradient (coarse grid)."""
    c = geo.coarse_mm
    return np.exp(_F32(an.bias) * _smooth_noise(rng, geo.coarse.shape, 2 * _coarse_sigma(geo))
                  + _F32(an.bias * 0.5 / 80.0) * (c.y * _F32(rng.uniform(-1, 1))
                                                  + c.z * _F32(rng.uniform(-1, 1))))


def _coarse_anatomy(rng: np.random.Generator, an: _Anatomy, geo: _Geometry,
                    warp: _Warp) -> _CoarseAnatomy:
    """Tissue depths, sulcus / fissure limits and the bias field at the warped coarse grid."""
    x, y, z = warp.at
    depth, infra, outer = _anatomy_fields(x, y, z, an, warp.outline, with_regions=True)
    vent = _ventricles(x, y, z, an)
    dgm = _deep_grey(x, y, z, an)
    sulc, fiss = _csf_limits(rng, an, geo, warp.at, infra, outer)
    bias = _bias_field(rng, an, geo)
    return _CoarseAnatomy(warp.at, depth, _intracranial(depth, infra, an, geo), infra, vent, dgm,
                          sulc, fiss, bias)


def _intracranial(depth: np.ndarray, infra: np.ndarray, an: _Anatomy,
                  geo: _Geometry) -> np.ndarray:
    """Depth (mm) into the intracranial space: the tissue plus the CSF spaces a mask keeps.

    A skull-stripped BraTS mask is the inside of the skull, so on the lower slices it holds the
    basal cisterns between the temporal lobes and the brain stem, the CSF around the cerebellum
    and the gaps under the occipital lobes: 23 % of the real lesion-free low slices' brain
    pixels are CSF-dark against 6 % in a phantom whose mask is its tissue
    (scripts/synth_vs_real.py). A grey-level closing of the depth field fills the concavities
    narrower than ~2 x 12 mm; the cerebellum and brain stem get a CSF shell.
    """
    k = max(1, round(12.0 * geo.scale / geo.coarse.step))
    r = np.arange(-k, k + 1)
    ball = (r[:, None, None] ** 2 + r[None, :, None] ** 2 + r[None, None, :] ** 2) <= k * k
    closed = ndimage.grey_closing(depth, footprint=ball, mode="nearest")
    return np.maximum(closed, depth + infra * _F32(an.cistern_shell)).astype(np.float32)


def _gyri(rng: np.random.Generator, an: _Anatomy, at: _Xyz) -> np.ndarray:
    """Signed distance (mm) to the radial sulcal sheets of the gyral pattern at ``at``."""
    _, ux, uy, uz = _ellipsoid_depth(at.x, at.y, at.z, an.cerebrum_center, an.cerebrum_axes)
    # Sulci are sheets roughly perpendicular to the surface: a random-wave field of the direction
    # (radial sheets), tilted by a fraction of the position so they bend with depth.
    r0, tilt = _F32(70.0 * an.size), _F32(0.5)
    qx = ux * r0 + tilt * (at.x - _F32(an.cerebrum_center[0]) - ux * r0)
    qy = uy * r0 + tilt * (at.y - _F32(an.cerebrum_center[1]) - uy * r0)
    qz = uz * r0 + tilt * (at.z - _F32(an.cerebrum_center[2]) - uz * r0)
    kappa = 2 * np.pi / (an.gyral_wavelength * an.size)
    return _sheet_distance(rng, qx, qy, qz, count=12, wavenumber=kappa)


def _base_intensity(rng: np.random.Generator, an: _Anatomy, geo: _Geometry, mid: _Grid,
                    coarse: _CoarseAnatomy, at: _Xyz) -> np.ndarray:
    """Tissue base intensity on the medium grid: texture, deep grey, cerebellar folia, bias."""
    infra_m = _resample(coarse.infra, geo.coarse, mid)
    dgm_m = np.clip(_F32(0.5) + _resample(coarse.dgm, geo.coarse, mid) / _F32(3.0), 0.0, 1.0)
    cb_r = np.sqrt((np.abs(at.x) - _F32(an.cerebellum_center[0])) ** 2
                   + (at.y - _F32(an.cerebellum_center[1])) ** 2
                   + (at.z - _F32(an.cerebellum_center[2])) ** 2)
    folia = _F32(0.035) * np.cos(cb_r * _F32(2 * np.pi / (6.0 * an.size))
                                 + _F32(2.0) * _smooth_noise(rng, mid.shape,
                                                             4.0 * geo.scale / geo.mstep))
    texture = _smooth_noise(rng, mid.shape, 2.5 * geo.scale / geo.mstep) * _F32(an.texture)
    base = (_F32(1.0) + texture + dgm_m * _F32(an.dgm_ratio - 1) * (1 - infra_m)
            + infra_m * (_F32(an.cerebellum_ratio - 1) + folia))
    base *= _resample(coarse.bias, geo.coarse, mid) * _F32(an.wm_level)
    return base


def _medium_fields(rng: np.random.Generator, an: _Anatomy, geo: _Geometry, box: _Box,
                   coarse: _CoarseAnatomy) -> tuple[np.ndarray, np.ndarray]:
    """Gyral sheet distance and tissue base intensity on the work box's medium grid."""
    at = _Xyz(*(_resample(v, geo.coarse, box.mid) for v in coarse.at))
    gyri = _gyri(rng, an, at)
    return gyri, _base_intensity(rng, an, geo, box.mid, coarse, at)


def _csf_distances(an: _Anatomy, geo: _Geometry, box: _Box, coarse: _CoarseAnatomy,
                   gyri: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-resolution distances (mm, <= 0 inside) to sulcal and to fissure CSF."""
    # A sulcus is a sheet that stops at its allowed depth.
    d_sulc = np.abs(_resample(gyri, box.mid, box.fine))
    # Sulci open up towards the surface (wedge-shaped CSF), widest at the brain's edge.
    opening = np.clip(depth * _F32(-1.0 / 5.0) + _F32(1.0), 0.0, 1.0)
    opening *= _F32(0.8 * an.sulcus_halfwidth + 0.3)
    opening += _F32(an.sulcus_halfwidth)
    d_sulc -= opening
    del opening
    np.maximum(d_sulc, _resample(coarse.sulc, geo.coarse, box.fine), out=d_sulc)
    d_fiss = np.abs(_resample(coarse.at.x - _F32(an.cerebrum_center[0]), geo.coarse, box.fine))
    d_fiss -= _F32(an.fissure_halfwidth)
    np.maximum(d_fiss, _resample(coarse.fiss, geo.coarse, box.fine), out=d_fiss)
    return d_sulc, d_fiss


def _fine_tissue(an: _Anatomy, geo: _Geometry, box: _Box, coarse: _CoarseAnatomy,
                 gyri: np.ndarray, base: np.ndarray) -> _Tissue:
    """Healthy full-resolution FLAIR of the work box: CSF, cortical ribbon, tissue intensity."""
    depth = _resample(coarse.depth, geo.coarse, box.fine)
    brain = _resample(coarse.icv, geo.coarse, box.fine) > 0  # tissue outside it is CSF
    pv = geo.vox_mm  # partial-volume ramp: one voxel
    d_sulc, d_fiss = _csf_distances(an, geo, box, coarse, gyri, depth)
    vent = _resample(coarse.vent, geo.coarse, box.fine)
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
    tissue = _resample(base, box.mid, box.fine)
    img = gm * _F32(an.gm_ratio - 1)
    img += csf * _F32(an.csf_ratio - 1)
    img += 1
    img *= tissue
    return _Tissue(img, tissue, depth, brain, vent, gm, csf)
