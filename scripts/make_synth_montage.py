"""Render docs/synth_montage.png: axial slices of a few subjects of the built-in synthetic dataset.

Usage (from the repository root)::

    .venv/bin/python scripts/make_synth_montage.py [--out docs/synth_montage.png]
        [--subjects 4] [--seed 0] [--shape 240,240,155]

Subjects are those ``cavlog synth OUT --seed S`` writes (SYN_0000, SYN_0001, ...). Each row shows
one subject at several heights of its brain's axial extent, FLAIR in grey (window: brain
percentiles 0.5-99.5) with the whole-tumour outline in red and the tumour core (labels 1 and 4)
in yellow. Display only: the (X, Y) slice is transposed so anterior is up and the patient's
right is on the right (neurological convention).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cavlog_core._atomic import atomic_path
from cavlog_core.config import SynthConfig
from cavlog_core.synth import iter_subjects

HEIGHTS = (0.2, 0.35, 0.45, 0.5, 0.55, 0.7, 0.85)  # fractions of the brain's axial extent


def render(out: Path, cfg: SynthConfig) -> Path:
    n_cols = len(HEIGHTS)
    fig, axes = plt.subplots(cfg.subjects, n_cols, figsize=(1.9 * n_cols, 2.35 * cfg.subjects),
                             squeeze=False, facecolor="black",
                             gridspec_kw={"wspace": 0.03, "hspace": 0.12})
    for row, (case_id, (flair, seg, brain)) in enumerate(iter_subjects(cfg)):
        z_brain = np.nonzero(brain.any(axis=(0, 1)))[0]
        lo, hi = np.percentile(flair[brain], (0.5, 99.5))
        if seg.any():  # window so the lesion is not saturated (as a viewer's auto-range would)
            hi = max(hi, float(np.percentile(flair[seg > 0], 98)))
        # Crop every slice of the row to the brain's in-plane bounding box (+ a margin).
        xy = np.argwhere(brain.any(axis=2))
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0) + 1
        pad = max(2, (x1 - x0) // 20)
        crop = (slice(max(x0 - pad, 0), x1 + pad), slice(max(y0 - pad, 0), y1 + pad))
        lesion = seg > 0
        status = (f"lesion {100 * lesion.sum() / brain.sum():.2f} % of brain" if lesion.any()
                  else "healthy")
        for col, frac in enumerate(HEIGHTS):
            z = round(float(z_brain[0] + frac * (z_brain[-1] - z_brain[0])))
            ax = axes[row, col]
            ax.imshow(flair[(*crop, z)].T, origin="lower", cmap="gray", vmin=lo, vmax=hi,
                      interpolation="nearest")
            if lesion[(*crop, z)].any():
                ax.contour(lesion[(*crop, z)].T, levels=[0.5], colors="red", linewidths=0.7)
                core = np.isin(seg[(*crop, z)], (1, 4))
                if core.any():
                    ax.contour(core.T, levels=[0.5], colors="yellow", linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"z={z}", color="white", fontsize=7, pad=2)
        axes[row, 0].set_ylabel(f"{case_id}\n{status}", color="white", fontsize=7)
    fig.suptitle(f"cavlog synth --seed {cfg.seed} --shape {','.join(map(str, cfg.shape))}: "
                 "FLAIR, whole tumour (red), core (yellow); anterior up, patient's right on "
                 "the right", color="white", fontsize=8)
    fig.subplots_adjust(left=0.04, right=0.995, bottom=0.01, top=0.94)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=95, facecolor="black", format="png")
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/synth_montage.png"))
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shape", default="240,240,155")
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    cfg = SynthConfig(subjects=args.subjects, seed=args.seed, shape=shape)  # type: ignore[arg-type]
    print(render(args.out, cfg))


if __name__ == "__main__":
    main()
