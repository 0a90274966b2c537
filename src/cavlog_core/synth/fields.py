"""Grids, resampling and smooth random fields for the phantom (all float32 numpy).

Speed: the smooth fields of a subject are computed on a coarse grid (4 mm) or a medium grid
(2 mm, for the gyral pattern) and linearly upsampled (:func:`_resample`), and only the brain's
bounding box is filled at full resolution. Coordinates are nominal millimetres of the BraTS grid
(240 x 240 x 155, 1 mm), scaled to the volume's shape.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
from scipy import ndimage

_F32 = np.float32

#: Shape of a BraTS volume; phantom anatomy is defined in millimetres for this grid and scaled.
_REF_SHAPE = (240.0, 240.0, 155.0)

#: A perturbation of an ellipsoid's normalised radius, as a function of the unit direction.
Wobble = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class _Grid(NamedTuple):
    """Regular sub-grid of the voxel grid: point i sits at voxel ``start + i * step``."""

    start: tuple[int, ...]
    step: int
    shape: tuple[int, ...]

    def mm(self, center: np.ndarray, scale: float) -> list[np.ndarray]:
        """Broadcastable nominal-mm coordinates ``(x, y, z)`` of the grid points."""
        axes = []
        for ax in range(3):
            v = (self.start[ax] + self.step * np.arange(self.shape[ax]) - center[ax]) / scale
            sh = [1, 1, 1]
            sh[ax] = -1
            axes.append(v.astype(_F32).reshape(sh))
        return axes


class _Xyz(NamedTuple):
    """Three broadcastable arrays of nominal-mm coordinates ``(x, y, z)`` at grid points."""

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


class _Geometry(NamedTuple):
    """How one volume's voxels map to nominal mm, with the coarse grid over the whole volume.

    ``scale`` is voxels per nominal mm, ``center`` the centre voxel, ``vox_mm`` one voxel in
    nominal mm, ``mstep`` the medium grid's spacing (voxels), ``coarse_mm`` the coarse points'
    coordinates.
    """

    dims: tuple[int, int, int]
    scale: float
    center: np.ndarray
    vox_mm: float
    mstep: int
    coarse: _Grid
    coarse_mm: _Xyz


class _Box(NamedTuple):
    """Work box (voxels ``lo..hi-1``): the only part filled at full resolution (``fine``)."""

    lo: np.ndarray
    hi: np.ndarray
    fine: _Grid
    mid: _Grid


def _geometry(dims: tuple[int, int, int]) -> _Geometry:
    """Scale, centre and grid steps of a ``dims`` volume (4 mm coarse, 2 mm medium grid)."""
    scale = min(d / r for d, r in zip(dims, _REF_SHAPE))
    center = (np.asarray(dims, dtype=float) - 1) / 2
    cstep = max(1, round(4 * scale))
    coarse = _covering_grid(np.zeros(3, int), np.asarray(dims), cstep)
    x, y, z = coarse.mm(center, scale)
    return _Geometry(dims=dims, scale=scale, center=center, vox_mm=1.0 / scale,
                     mstep=max(1, round(2 * scale)), coarse=coarse, coarse_mm=_Xyz(x, y, z))


def _work_box(depth: np.ndarray, geo: _Geometry) -> _Box:
    """Work box: bounding box (plus a margin) of ``depth > 0`` on the coarse grid, with grids."""
    coarse, cstep = geo.coarse, geo.coarse.step
    inside = np.argwhere(depth > -2.0 * geo.vox_mm * cstep)
    lo = np.maximum(coarse.start + cstep * (inside.min(axis=0) - 1), 0)
    hi = np.minimum(coarse.start + cstep * (inside.max(axis=0) + 2), geo.dims)
    fine = _Grid(tuple(int(v) for v in lo), 1, tuple(int(v) for v in hi - lo))
    return _Box(lo, hi, fine, _covering_grid(lo, hi, geo.mstep))


def _covering_grid(lo: np.ndarray, hi: np.ndarray, step: int) -> _Grid:
    """Grid of spacing ``step`` whose points cover voxels ``lo..hi-1`` (inclusive of the ends)."""
    n = tuple(math.ceil((b - 1 - a) / step) + 2 for a, b in zip(lo, hi))
    return _Grid(tuple(int(v) for v in lo), step, n)


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


def _ellipsoid_depth(x: np.ndarray, y: np.ndarray, z: np.ndarray, center: Sequence[float],
                     axes: Sequence[float], wobble: Wobble | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
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


def _wobble_fn(rng: np.random.Generator, amplitude: float, wavenumber: float,
               count: int) -> Wobble:
    """Low-frequency angular noise on the unit sphere (a function of the direction ``u``)."""
    d = rng.standard_normal((count, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d *= wavenumber
    phase = rng.uniform(0, 2 * np.pi, count)
    norm = amplitude * math.sqrt(2.0 / count)

    def fn(ux: np.ndarray, uy: np.ndarray, uz: np.ndarray) -> np.ndarray:
        out: np.ndarray | None = None
        for k in range(count):
            t = np.cos(_F32(d[k, 0]) * ux + _F32(d[k, 1]) * uy + _F32(d[k, 2]) * uz
                       + _F32(phase[k]))
            out = t if out is None else out + t
        assert out is not None  # count >= 1
        return out * _F32(norm)

    return fn
