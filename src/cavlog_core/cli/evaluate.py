"""``cavlog evaluate CHECKPOINT DATA --out report.json``: pixel metrics on a labelled split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import TrainConfig
from ._common import add_inference_options, existing_path, output_file, require

TRN = TrainConfig()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog evaluate`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "evaluate",
        help="pooled pixel metrics (AUROC, AUPRC, Dice) of a checkpoint on a labelled split",
        description="Evaluate CHECKPOINT on the scans of DATA (on its training data: the run's "
                    "seeded test split; on other data: every case) "
                    "(scans with too little lesion dropped), at model resolution on the selected "
                    "slices: pooled AUROC / AUPRC / AP inside the brain (or --all-pixels), Dice "
                    "and IoU at fixed_0.5 and the checkpoint's healthy thresholds (pooled and per "
                    "scan), and the F1-best operating point, which uses the ground truth "
                    "(oracle). Writes JSON and prints a Markdown table.",
    )
    p.add_argument("checkpoint", type=existing_path, help="checkpoint.pt written by cavlog train")
    p.add_argument("data", type=existing_path, help="dataset root with ground truth (<ID>_seg)")
    p.add_argument("--out", required=True, type=Path, help="report .json (written atomically)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report")
    p.add_argument("--split", choices=("auto", "test", "val", "train", "all"), default="auto",
                   help="split of the training run (same fractions and seed) or all; default "
                        "auto: the test split on the training data, every case on other data")
    p.add_argument("--slices", default=None,
                   help="'central:N' or 'brain'; default: the checkpoint's (paper: central:10)")
    p.add_argument("--all-pixels", action="store_true",
                   help="pool every pixel of the slices (the paper's convention) instead of the "
                        "brain only")
    add_inference_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog evaluate`` with parsed ``args``; return the exit status."""
    require(args.batch_size >= 1, f"--batch-size {args.batch_size}: must be >= 1")
    require(args.out.suffix.lower() == ".json", f"--out {args.out}: must end in .json")
    output_file(args.out, force=args.force)
    from .._lock import folder_lock

    with folder_lock(args.out.parent, f".{args.out.name}.lock", what="another cavlog evaluate"):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .._progress import drain
    from ..device import resolve_device, warn_if_cpu_fallback
    from ..evaluate import evaluate

    device = resolve_device(args.device)
    warn_if_cpu_fallback(args.device, device)
    gen = evaluate(args.checkpoint, args.data, split=args.split, slices=args.slices,
                   all_pixels=args.all_pixels, device=str(device), batch_size=args.batch_size,
                   precision=args.precision)
    bar = None

    def show(ev) -> None:
        nonlocal bar
        if bar is None:  # after the first scan, so early errors print no bar
            bar = tqdm(desc="evaluate", unit="scan", file=sys.stderr, dynamic_ncols=True,
                       leave=False, total=ev.total)
        bar.set_postfix_str(ev.case_id + (" (skipped)" if ev.skipped else ""), refresh=False)
        bar.update(ev.done - bar.n)

    try:
        report = drain(gen, show)
    finally:
        if bar is not None:
            bar.close()
    report.to_json(args.out)
    print(report.to_markdown())
    print(f"\nreport: {args.out}")
    return 0
