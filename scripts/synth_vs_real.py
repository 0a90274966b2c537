"""Measure the gap between synthetic healthy FLAIR slices and lesion-free slices of real scans.

For each source, the lesion-free axial slices (``--slices``, default every brain slice) are
divided by their own median brain intensity (so that a tumour elsewhere in the volume, which
sets the volume's upper percentiles, does not shift healthy tissue) and pooled; the script
prints, per source: quantiles of that ratio, the share of dark (CSF-like, < 0.5 x median) brain
pixels, the brightness of the outer 3-pixel rim relative to the median (cortical ribbon and
surface CSF), the high-frequency texture (mean |Laplacian| of the ratio inside the eroded brain)
and the 1-Wasserstein distance of the ratio histogram to the real pool (docs/synthetic_data.md).
Real lesion-free slices are mostly the lower and upper brain (tumours fill the middle), so each
synthetic source is also reported *level-matched*: its slices resampled (fixed seed) so that their
relative heights in the brain (0 = lowest brain slice, 1 = highest) follow the real slices'
histogram, plus the dark share per height band, which shows where the anatomy differs:

    python scripts/synth_vs_real.py --real ../shared/data/brats2013 --synth data/glioma
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from cavlog_core.data import find_cases, load_case, select_slices

BANDS = np.linspace(0.0, 1.0, 6)  # relative-height bands for the per-level table


def slice_stats(root: Path, slices: str, healthy_only: bool) -> dict[str, np.ndarray | list]:
    """Per-slice statistics of the lesion-free brain slices under ``root``."""
    values, dark, rim, tex, height = [], [], [], [], []
    for files in find_cases(root):
        case = load_case(files)
        if healthy_only and case.seg is not None and case.seg.any():
            continue
        flair = case.flair.astype(np.float32)
        zs = np.flatnonzero(case.brain_mask.any(axis=(0, 1)))
        z0, z1 = (int(zs[0]), int(zs[-1])) if zs.size else (0, 1)
        for z in select_slices(case.brain_mask, slices):
            brain = case.brain_mask[:, :, z]
            if case.seg is not None and (case.seg[:, :, z] > 0).any():
                continue  # lesion-free slices only
            img = flair[:, :, z] - flair[:, :, z][~brain].mean() if (~brain).any() \
                else flair[:, :, z]  # the real data's background is a constant, not 0
            img = img / max(float(np.median(img[brain])), 1e-6) * brain
            v = img[brain]
            inner = ndimage.binary_erosion(brain, iterations=3)
            outer = brain & ~inner
            if inner.sum() < 100:
                continue
            values.append(v)
            dark.append(float((v < 0.5).mean()))
            rim.append(float(np.median(img[outer])))
            tex.append(float(np.abs(ndimage.laplace(img))[ndimage.binary_erosion(
                inner, iterations=2)].mean()))
            height.append((z - z0) / max(z1 - z0, 1))
    return {"values": values, "dark": np.asarray(dark), "rim": np.asarray(rim),
            "texture": np.asarray(tex), "height": np.asarray(height)}


def level_matched(st: dict, real: dict, *, seed: int = 0) -> dict:
    """Resample ``st``'s slices so that their heights follow ``real``'s height histogram."""
    bins = np.linspace(0.0, 1.0, 11)
    want = np.histogram(real["height"], bins)[0] / len(real["height"])
    have = np.histogram(st["height"], bins)[0]
    band = np.clip(np.digitize(st["height"], bins) - 1, 0, 9)
    w = np.where(have[band] > 0, want[band] / np.maximum(have[band], 1), 0.0)
    pick = np.random.default_rng(seed).choice(len(w), size=len(w), p=w / w.sum())
    return {"values": [st["values"][i] for i in pick],
            **{k: st[k][pick] for k in ("dark", "rim", "texture", "height")}}


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    q = np.linspace(0, 1, 1001)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, required=True, help="real cases (lesion-free slices used)")
    p.add_argument("--synth", type=Path, nargs="+", required=True,
                   help="synthetic datasets (their lesion-free slices used)")
    p.add_argument("--slices", default="brain")
    args = p.parse_args()
    if not args.real.is_dir():
        print(f"{args.real}: not a folder", file=sys.stderr)
        return 2
    real = slice_stats(args.real, args.slices, healthy_only=False)
    rows = [("real: " + args.real.name, real)]
    for s in args.synth:
        st = slice_stats(s, args.slices, healthy_only=False)
        rows += [("synthetic: " + s.name, st),
                 ("synthetic: " + s.name + ", level-matched", level_matched(st, real))]
    real_pool = np.concatenate(real["values"])
    print("| source | slices | p5 / p25 / p75 / p95 (x median) | dark < 0.5 | rim / median "
          "| texture | W1 to real |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, st in rows:
        pool = np.concatenate(st["values"])
        q = np.quantile(pool, [0.05, 0.25, 0.75, 0.95])
        print(f"| {name} | {len(st['dark'])} | {' / '.join(f'{v:.2f}' for v in q)} | "
              f"{st['dark'].mean():.3f} | {st['rim'].mean():.2f} | {st['texture'].mean():.3f} | "
              f"{wasserstein(pool, real_pool):.3f} |")
    bands = [f"{a:.1f}-{b:.1f}" for a, b in itertools.pairwise(BANDS)]
    print("\ndark share (< 0.5 x median) by relative height in the brain (slices in brackets)\n")
    print("| source | " + " | ".join(bands) + " |")
    print("|---|" + "---:|" * len(bands))
    for name, st in rows[:1] + rows[1::2]:
        idx = np.clip(np.digitize(st["height"], BANDS) - 1, 0, len(bands) - 1)
        cells = [f"{st['dark'][idx == b].mean():.3f} ({(idx == b).sum()})" if (idx == b).any()
                 else "–" for b in range(len(bands))]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
