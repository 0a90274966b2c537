"""Measure the gap between synthetic healthy FLAIR slices and lesion-free slices of real scans.

For each source, the lesion-free axial slices (``--slices``, default every brain slice) are
divided by their own median brain intensity (so that a tumour elsewhere in the volume, which
sets the volume's upper percentiles, does not shift healthy tissue) and pooled; the script
prints, per source: quantiles of that ratio, the share of dark (CSF-like, < 0.5 x median) brain
pixels, the brightness of the outer 3-pixel rim relative to the median (cortical ribbon and
surface CSF), the high-frequency texture (mean |Laplacian| of the ratio inside the eroded brain)
and the 1-Wasserstein distance of the ratio histogram to the real pool (docs/synthetic_data.md):

    python scripts/synth_vs_real.py --real ../shared/data/brats2013 --synth data/glioma
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from cavlog_core.data import find_cases, load_case, select_slices


def slice_stats(root: Path, slices: str, healthy_only: bool) -> dict[str, float | np.ndarray]:
    values, dark, rim, tex, n = [], [], [], [], 0
    for files in find_cases(root):
        case = load_case(files)
        if healthy_only and case.seg is not None and case.seg.any():
            continue
        flair = case.flair.astype(np.float32)
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
            n += 1
    pooled = np.concatenate(values) if values else np.zeros(0)
    return {"slices": n, "values": pooled, "dark": float(np.mean(dark)),
            "rim": float(np.mean(rim)), "texture": float(np.mean(tex))}


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
    rows += [("synthetic: " + s.name, slice_stats(s, args.slices, healthy_only=False))
             for s in args.synth]
    print("| source | slices | p5 / p25 / p75 / p95 (x median) | dark < 0.5 | rim / median "
          "| texture | W1 to real |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for name, st in rows:
        q = np.quantile(st["values"], [0.05, 0.25, 0.75, 0.95])
        print(f"| {name} | {st['slices']} | {' / '.join(f'{v:.2f}' for v in q)} | "
              f"{st['dark']:.3f} | {st['rim']:.2f} | {st['texture']:.3f} | "
              f"{wasserstein(st['values'], real['values']):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
