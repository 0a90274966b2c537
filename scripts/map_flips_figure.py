"""Figure for README, "Flip-averaged maps": one pass against the mean over the four flips.

    python scripts/map_flips_figure.py [--checkpoint W.pt] [--case DIR] [--out docs/map_flips.png]

For one synthetic case (default: of the first ``--candidates`` cases of ``data/synth``, as written
by ``make demo``, the one whose four passes disagree most): the FLAIR with the ground-truth
outline, the map of each of the four flipped passes (flipped back), and their mean
(``ModelConfig.map_flips=4``), on the slice with the most lesion. Same weights throughout.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cavlog_core.checkpoint import LoadedCheckpoint, load_checkpoint
from cavlog_core.data import find_cases, load_case
from cavlog_core.inference.predict import predict
from cavlog_core.methods.base import FLIPS

ROOT = Path(__file__).resolve().parents[1]
NAMES = {(): "as given", (-2,): "left-right flip", (-1,): "front-back flip",
         (-2, -1): "both flips"}


def _one_flip(loaded: LoadedCheckpoint, dims: tuple[int, ...]) -> LoadedCheckpoint:
    """``loaded`` whose map is the one pass of the slice flipped along ``dims``, flipped back."""
    loaded = loaded.with_map_flips(1)
    method = loaded.method
    base = method.raw_maps_and_fc  # what Method.maps runs for each batch

    def flipped(modules, images, brain):
        raw, fc = base(modules, images.flip(dims), brain.flip(dims))
        return raw.flip(dims), fc

    if dims:
        method.raw_maps_and_fc = flipped  # type: ignore[method-assign]
    return loaded


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path,
                   default=ROOT / "src" / "napari_cavlog" / "weights" / "demo.pt")
    p.add_argument("--case", type=Path, default=None)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synth")
    p.add_argument("--candidates", type=int, default=8,
                   help="show the one of the first N lesion cases whose passes disagree most")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "map_flips.png")
    args = p.parse_args()
    loaded = load_checkpoint(args.checkpoint)
    files = [args.case] if args.case else find_cases(args.data)[:args.candidates]
    best = None
    for case in map(load_case, files):
        if case.seg is None or not case.seg.any():
            continue
        z = int(np.argmax((case.seg > 0).sum(axis=(0, 1))))
        passes = {dims: predict(_one_flip(loaded, dims), case, slices=np.array([z]),
                                precision="fp32").anomaly[..., z] for dims in FLIPS[4]}
        stack = np.stack(list(passes.values()))
        spread = float(np.abs(stack - stack.mean(0))[:, case.brain_mask[..., z]].mean())
        if best is None or spread > best[0]:
            best = (spread, case, z, passes)
    if best is None:
        raise SystemExit(f"{args.data}: no case with a lesion")
    _, case, z, passes = best
    lesion = case.seg > 0
    mean = predict(loaded.with_map_flips(4), case, slices=np.array([z]),
                   precision="fp32").anomaly[..., z]
    panels = [("FLAIR, lesion outlined", case.flair[..., z])]
    panels += [(f"one pass: {NAMES[d]}", m) for d, m in passes.items()]
    panels += [("mean of the four (map_flips=4)", mean)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (title, img) in zip(axes, panels, strict=True):
        ax.imshow(np.rot90(img), cmap="gray" if "FLAIR" in title else "inferno")
        ax.contour(np.rot90(lesion[..., z]), levels=[0.5], colors="lime", linewidths=0.8)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{case.case_id}, z={z} (of the first {args.candidates} cases, the one whose "
                 "passes disagree most): the mean keeps what the four passes agree on",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
