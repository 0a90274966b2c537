"""Healthy phantom anatomy: the random parameters of a brain and its analytic depth fields.

A cerebrum (ellipsoid with a low-frequency irregular outline, a flat floor and a medial notch that
leaves the temporal lobes), cerebellum and brain stem; lateral ventricle pair, third and fourth
ventricles; deep grey matter (thalami, lentiform nuclei, caudate heads). Each structure is a
signed depth field in nominal mm (positive inside), evaluated at warped coordinates; the
cortical ribbon, sulci and fissure are drawn from these fields by
:func:`~cavlog_core.synth.generate_subject`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from .fields import _F32, Wobble, _ellipsoid_depth


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

