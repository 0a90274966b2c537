"""Lesions painted into a phantom: one glioma (labels 1, 2, 4) or many small MS-like lesions (1).

A glioma sits in hemispheric white matter near the middle of the brain's axial extent: an
irregular hyperintense oedema (label 2) around a core made of necrosis / non-enhancing tumour
(label 1) and, for most subjects, an enhancing rim (label 4), with a mild mass effect (BraTS 2017+
label convention, Menze et al., IEEE TMI 2015). MS-like lesions are small FLAIR-hyperintense
ovoids, periventricular, juxtacortical and in deep white matter. The sizes of both presets are
measured against real data in ``docs/synthetic_data.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .fields import _F32, _ellipsoid_depth, _Geometry, _Grid, _smooth_noise, _wobble_fn, _Xyz

#: A field sampled at a point ``(x, y, z)`` in nominal mm.
PointField = Callable[[tuple[float, float, float]], float]


@dataclass(frozen=True)
class _Lesion:
    """One glioma: oedema and core ellipsoids (nominal mm), rotation, contrasts, mass effect."""

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


def _draw_lesion(rng: np.random.Generator, size: float, z_mid: float, depth_at: PointField,
                 vent_at: PointField, hemisphere_axes: tuple[float, float, float]) -> _Lesion:
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


def _coarse_sampler(field: np.ndarray, geo: _Geometry) -> PointField:
    """Nearest coarse-grid value of ``field`` at a point in nominal mm (clipped to the grid)."""
    coarse = geo.coarse

    def at(c: tuple[float, float, float]) -> float:
        idx = [int(np.clip(round((c[a] * geo.scale + geo.center[a]) / coarse.step), 0,
                           coarse.shape[a] - 1)) for a in range(3)]
        return float(field[tuple(idx)])

    return at


def _place_glioma(rng: np.random.Generator, geo: _Geometry, depth: np.ndarray, vent: np.ndarray,
                  size: float, hemisphere_axes: tuple[float, float, float],
                  icv: np.ndarray) -> _Lesion:
    """Draw a glioma at the axial middle of the brain mask (coarse ``icv`` > 0) in tissue.

    ``depth`` and ``vent`` (coarse grid, mm) say where tissue and ventricles are; the middle is
    that of the intracranial mask, whose slices the central-slice protocol counts.
    """
    inside_z = np.nonzero((icv > 0).any(axis=(0, 1)))[0]
    z_lo, z_hi = geo.coarse.start[2] + geo.coarse.step * inside_z[[0, -1]]
    z_mid = ((z_lo + z_hi) / 2 - geo.center[2]) / geo.scale
    return _draw_lesion(rng, size, z_mid, _coarse_sampler(depth, geo), _coarse_sampler(vent, geo),
                        hemisphere_axes)


def _mass_effect(les: _Lesion, coords: _Xyz, warped: _Xyz, depth: np.ndarray) -> _Xyz:
    """Warped coordinates pulled towards the lesion centre, pushing tissue outwards."""
    dx = coords.x - _F32(les.center[0])
    dy = coords.y - _F32(les.center[1])
    dz = coords.z - _F32(les.center[2])
    s2 = _F32(2 * (1.3 * max(les.axes)) ** 2)
    push = _F32(les.mass) * np.exp(-(dx * dx + dy * dy + dz * dz) / s2)
    # The skull holds the outline: the push fades to 0 over the outer 15 mm of the brain, so
    # the tumour displaces inner structures (ventricles, deep grey matter), not the surface.
    push *= np.clip(depth / _F32(15.0), 0.0, 1.0)
    return _Xyz(warped.x - push * dx, warped.y - push * dy, warped.z - push * dz)


def _paint_lesion(img: np.ndarray, seg: np.ndarray, tissue: np.ndarray, depth: np.ndarray,
                  not_wm: np.ndarray, les: _Lesion, fine: _Grid, center: np.ndarray,
                  scale: float, rng: np.random.Generator) -> None:
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


def _paint_ms(img: np.ndarray, seg: np.ndarray, tissue: np.ndarray, depth: np.ndarray,
              vent: np.ndarray, gm: np.ndarray, csf: np.ndarray, infra: np.ndarray,
              vox_mm: float, rng: np.random.Generator) -> None:
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
