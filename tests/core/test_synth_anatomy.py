"""The intracranial mask of the phantom: cisterns and CSF shells inside the brain mask."""

import numpy as np

from cavlog_core.synth import generate_subject, subject_seed
from cavlog_core.synth.anatomy import _draw_anatomy, _intracranial
from cavlog_core.synth.fields import _geometry


def _two_balls(gap_mm: float) -> tuple[np.ndarray, object]:
    """Depth field (mm, + inside) of two 20 mm balls ``gap_mm`` apart on a 240x240x155 grid."""
    geo = _geometry((240, 240, 155))
    x, y, z = geo.coarse_mm
    r = 20.0
    cx = r + gap_mm / 2
    left = r - np.sqrt((x + cx) ** 2 + y ** 2 + z ** 2)
    right = r - np.sqrt((x - cx) ** 2 + y ** 2 + z ** 2)
    return np.maximum(left, right).astype(np.float32), geo


def test_closing_fills_a_narrow_gap_but_not_a_wide_one():
    an = _draw_anatomy(np.random.default_rng(0))
    for gap, filled in ((8.0, True), (60.0, False)):
        depth, geo = _two_balls(gap)
        infra = np.zeros_like(depth)  # no shell: only the closing acts
        icv = _intracranial(depth, infra, an, geo)
        assert (icv >= depth - 1e-5).all()  # the mask only grows
        x, y, z = geo.coarse_mm
        mid = np.abs(x) + np.abs(y) + np.abs(z)
        at_centre = icv.flat[int(np.argmin(mid))]  # the point halfway between the balls
        assert (at_centre > 0) == filled, (gap, at_centre)


def test_shell_around_infratentorial_structures():
    an = _draw_anatomy(np.random.default_rng(0))
    depth, geo = _two_balls(60.0)
    icv = _intracranial(depth, np.ones_like(depth), an, geo)  # all "cerebellum": a CSF shell
    x = geo.coarse_mm.x
    outward = np.abs(x) > 30.0 + 20.0 / 2  # away from the gap, where closing adds nothing
    shell = outward & (depth < -0.2) & (depth > 0.2 - an.cistern_shell)
    beyond = outward & (depth < -an.cistern_shell - 0.5)
    assert shell.sum() > 10
    assert (icv[shell] > 0).all() and (icv[beyond] <= 0).all()


def test_low_slices_hold_csf_dark_pixels_like_real_masks():
    # Real BraTS lesion-free low slices: ~23 % of brain pixels < 0.5 x median (docs).
    flair, _, brain = generate_subject(subject_seed(0, 1), (120, 120, 78), healthy=True)
    z = np.flatnonzero(brain.any(axis=(0, 1)))
    low = slice(z[0] + 2, z[0] + (z[-1] - z[0]) // 5)
    vals = flair[:, :, low][brain[:, :, low]]
    dark = (vals < 0.5 * np.median(vals)).mean()
    assert 0.08 < dark < 0.4, dark
