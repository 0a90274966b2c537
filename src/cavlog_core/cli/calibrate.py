"""``cavlog calibrate CHECKPOINT HEALTHY_DIR --out NEW.pt``: healthy thresholds from other scans."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import MAP_FLIPS
from ._common import TRN, add_device_option, existing_path, output_file, require


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog calibrate`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "calibrate",
        help="recompute a checkpoint's healthy thresholds on other healthy scans (no training)",
        description="Recompute every healthy threshold of CHECKPOINT (healthy:p85 ... p99 and "
                    "the false-positive-rate thresholds healthy:fpr0.5 / fpr1 / fpr5) on the "
                    "lesion-free brain slices of HEALTHY_DIR, e.g. your own scanner's healthy "
                    "scans, and write them with the same weights to a new checkpoint. "
                    "healthy:fpr1 then flags about 1 %% of healthy brain voxels of such scans.",
    )
    p.add_argument("checkpoint", type=existing_path, help="trained checkpoint.pt")
    p.add_argument("healthy_dir", type=existing_path,
                   help="dataset root, case folder or NIfTI file (lesion-free slices are used)")
    p.add_argument("--out", required=True, type=Path, help="new checkpoint file (.pt)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--slices", default="brain",
                   help="'brain' (every brain slice, default) or 'central:N'")
    p.add_argument("--cache-dir", type=Path, default=None, help="slice cache folder")
    p.add_argument("--map-flips", type=int, choices=MAP_FLIPS, default=None,
                   help="change the test-time flips of the map (1, 2 or 4; see `cavlog train "
                        "--help`) and calibrate the thresholds for it; default: the "
                        "checkpoint's")
    add_device_option(p)
    p.add_argument("--batch-size", type=int, default=TRN.batch_size,
                   help=f"slices per network pass; default {TRN.batch_size}")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog calibrate`` with parsed ``args``; return the exit status."""
    from tqdm import tqdm

    from .._progress import drain
    from ..calibrate import calibrate
    from ..device import resolve_device, warn_if_cpu_fallback
    from .train import _show as show  # the same progress line as train / finetune

    require(args.batch_size >= 1, f"--batch-size {args.batch_size}: must be >= 1")
    require(args.out.suffix.lower() in (".pt", ".pth"), f"--out {args.out}: must end in .pt")
    output_file(args.out, force=args.force)
    device = resolve_device(args.device)
    warn_if_cpu_fallback(args.device, device)
    bar = tqdm(desc="calibrate", file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        result = drain(calibrate(args.checkpoint, args.healthy_dir, out=args.out,
                                 slices=args.slices, device=str(device),
                                 batch_size=args.batch_size, cache_dir=args.cache_dir,
                                 map_flips=args.map_flips),
                       lambda ev: show(bar, ev, "calibrate"))
    finally:
        bar.close()
    print(f"{result.slices} lesion-free slices of {args.healthy_dir}; map flips: "
          f"{result.map_flips}")
    print("| threshold | before | after |\n|---|---|---|")
    for key, value in result.thresholds.items():
        before = result.previous.get(key)
        print(f"| {key} | {'–' if before is None else f'{before:.4f}'} | {value:.4f} |")
    if result.healthy_fc_satisfied is not None:
        print(f"healthy slices with f_c(a) <= 0: {result.healthy_fc_satisfied:.1%}")
    print(f"checkpoint: {result.checkpoint_path}")
    return 0
