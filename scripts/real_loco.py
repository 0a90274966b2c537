"""Leave-one-case-out on real scans: the clinician's workflow, fine-tune on healthy slices, review.

For each case C of a labelled real dataset (default ``../shared/data/brats2013``, 3 gliomas):

1. evaluate the synthetic-only model (default: the shipped demo weights) on C;
2. fine-tune it (``cavlog finetune``: every lesion-free brain slice, no warm-up) on the *other*
   cases only, then evaluate the fine-tuned model on C;

on the 10 central slices (and every brain slice with ``--slices brain``). The table also gives,
for C, the lesion prevalence and the AUPRC of the normalised FLAIR itself as the map (FLAIR
intensity, no training) and of that FLAIR pooled to the CAM grid. Writes ``OUT/loco.json`` and
prints a Markdown table (docs/benchmark.md, "Real scans"). The real data stay outside the
repository and are never used to train shipped weights (their licence is non-commercial).

    python scripts/real_loco.py --out runs/loco --iterations 300
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from cavlog_core._progress import drain
from cavlog_core.checkpoint import config_from_payload, read_checkpoint
from cavlog_core.data import find_cases
from cavlog_core.evaluate import evaluate
from cavlog_core.training.fit import finetune_config, fit

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "napari_cavlog" / "weights" / "demo.pt"


def metrics(report) -> dict:
    d = report.to_dict()
    return {"auroc": d["auroc"], "auroc_all_pixels": d["auroc_all_pixels"], "auprc": d["auprc"],
            "dice_best": d["operating_point"]["dice_best"],
            "dice_p95": d["strategies"].get("healthy_p95", {}).get("dice"),
            "prevalence": d["prevalence"], "flair_auprc": d["reference"]["flair_auprc"],
            "flair_pooled_auprc": d["reference"]["flair_pooled_auprc"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats2013")
    p.add_argument("--checkpoint", type=Path, default=SHIPPED)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "loco")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-iterations", type=int, default=0,
                   help="of --iterations, how many train the VAE loss only (default 0)")
    p.add_argument("--slices", default="central:10", help="evaluation slices")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: not found (the real cases live in ../shared/data)", file=sys.stderr)
        return 2
    cases = find_cases(args.data)
    base = config_from_payload(args.checkpoint, read_checkpoint(args.checkpoint))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for held in cases:
        t0 = time.perf_counter()
        fold = args.out / held.case_id
        train_root = fold / "train_cases"
        shutil.rmtree(fold, ignore_errors=True)
        train_root.mkdir(parents=True)
        for other in cases:
            if other.case_id != held.case_id:
                (train_root / other.case_id).symlink_to(other.path.resolve())
        test_root = fold / "test_case"
        test_root.mkdir()
        (test_root / held.case_id).symlink_to(held.path.resolve())
        before = drain(evaluate(args.checkpoint, test_root, split="all", slices=args.slices,
                                device=args.device))
        config = finetune_config(base, iterations=args.iterations, lr=args.lr,
                                 warmup_iterations=args.warmup_iterations,
                                 device=args.device, seed=args.seed, checkpoint_every=10**6)
        result = drain(fit(config, train_root, out_dir=fold / "finetune",
                           init_checkpoint=args.checkpoint))
        after = drain(evaluate(result.checkpoint_path, test_root, split="all",
                               slices=args.slices, device=args.device))
        rows.append({"case": held.case_id, "synthetic_only": metrics(before),
                     "finetuned": metrics(after), "seconds": time.perf_counter() - t0,
                     "healthy_fc_satisfied": result.healthy_fc_satisfied})
        print(f"{held.case_id}: AUPRC {rows[-1]['synthetic_only']['auprc']:.3f} -> "
              f"{rows[-1]['finetuned']['auprc']:.3f} ({rows[-1]['seconds']:.0f} s)", flush=True)
    summary = {"data": str(args.data), "checkpoint": str(args.checkpoint),
               "iterations": args.iterations, "warmup_iterations": args.warmup_iterations,
               "lr": args.lr, "slices": args.slices,
               "seed": args.seed, "folds": rows}
    (args.out / "loco.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\nLeave-one-case-out, {args.data.name}, slices {args.slices}, fine-tune "
          f"{args.iterations} iterations (lr {args.lr:g}, seed {args.seed}):\n")
    print("| held-out case | prevalence | FLAIR AUPRC | FLAIR pooled | synthetic-only AUROC / "
          "AUPRC / [DICE] | fine-tuned AUROC / AUPRC / [DICE] |")
    print("|---|---:|---:|---:|---|---|")

    def cell(m):
        return f"{m['auroc']:.3f} / {m['auprc']:.3f} / {m['dice_best']:.3f}"

    for r in rows:
        s, f = r["synthetic_only"], r["finetuned"]
        print(f"| {r['case']} | {s['prevalence']:.3f} | {s['flair_auprc']:.3f} | "
              f"{s['flair_pooled_auprc']:.3f} | {cell(s)} | {cell(f)} |")
    mean = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in ("auroc", "auprc",
                                                                    "dice_best")}
            for k in ("synthetic_only", "finetuned")}
    print(f"| mean | | | | {cell(mean['synthetic_only'])} | {cell(mean['finetuned'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
