"""``cavlog finetune CHECKPOINT HEALTHY_DIR --out RUN_DIR``: continue training on healthy scans."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .train import drive, print_summary


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog finetune`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "finetune",
        help="continue training a checkpoint on a folder of healthy scans",
        description="Fine-tune a checkpoint on healthy scans (e.g. from your scanner): every "
                    "brain slice of HEALTHY_DIR is used, or only the lesion-free slices where a "
                    "segmentation exists; no warm-up, no split. Options left out keep the "
                    "checkpoint's settings. Weights are loaded, the optimiser starts afresh.",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint.pt to start from")
    p.add_argument("healthy_dir", type=Path, help="dataset root, case folder or NIfTI file")
    p.add_argument("--out", required=True, type=Path, help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue RUN_DIR/checkpoint.pt")
    keep = " (default: the checkpoint's)"
    p.add_argument("--iterations", type=int, default=None, help="batches to train" + keep)
    p.add_argument("--epochs", type=int, default=None, help="passes over the slices")
    p.add_argument("--batch-size", type=int, default=None, help="global batch size" + keep)
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate" + keep)
    p.add_argument("--lam", type=float, default=None, help="constraint weight" + keep)
    p.add_argument("--p", type=float, default=None, help="constraint margin" + keep)
    p.add_argument("--t", type=float, default=None, help="log-barrier t" + keep)
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N or mps" + keep)
    p.add_argument("--seed", type=int, default=None, help="random seed" + keep)
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="iterations between checkpoints" + keep)
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--cache-dir", type=Path, default=None, help="slice cache folder")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog finetune`` with parsed ``args``; return the exit status."""
    from ..checkpoint import load_checkpoint
    from ..errors import InputFileError
    from ..training import fit
    from ..training.fit import finetune_config

    if not args.healthy_dir.exists():
        raise InputFileError(args.healthy_dir, "no such file or directory")
    # Config, method and weights are all checked here, before any scan is read.
    base = load_checkpoint(args.checkpoint).config
    overrides = {
        "iterations": args.iterations, "epochs": args.epochs, "batch_size": args.batch_size,
        "lr": args.lr, "lam": args.lam, "p": args.p, "t": args.t, "device": args.device,
        "seed": args.seed, "checkpoint_every": args.checkpoint_every,
    }
    if args.no_amp:
        overrides["amp"] = False
    config = finetune_config(base, **overrides)
    gen = fit(config, args.healthy_dir, out_dir=args.out, resume=args.resume,
              init_checkpoint=args.checkpoint, cache_dir=args.cache_dir)
    result = drive(gen, desc="finetune", out_dir=args.out)
    if os.environ.get("RANK", "0") == "0":
        print_summary(result)
    return 0
