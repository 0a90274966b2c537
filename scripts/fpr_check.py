"""Stated against measured false-positive rate of a checkpoint's healthy thresholds.

For every case of DATA (or of one split of it), runs the model on the whole volume
(``predict_volume``, as ``cavlog predict`` and the plugin do), takes the axial slices that hold
brain but no lesion label, and reports the share of their brain voxels at or above each healthy
threshold: for ``healthy_fpr1`` the checkpoint states 1 %. Usage::

    .venv/bin/python scripts/fpr_check.py CHECKPOINT DATA [--split test|all] [--json OUT]

Prints one Markdown row per threshold: stated rate (FPR thresholds only), measured rate pooled
over all lesion-free slices, and the range over cases.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("data", type=Path)
    p.add_argument("--split", default="all", choices=("all", "train", "val", "test"),
                   help="the checkpoint's seeded split of DATA, or every case (default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)

    from cavlog_core._progress import drain
    from cavlog_core.checkpoint import load_checkpoint
    from cavlog_core.data import find_cases, lesion_free_slices, load_case, split_cases
    from cavlog_core.errors import one_line_warnings
    from cavlog_core.inference.predict import predict_volume

    one_line_warnings("fpr_check")
    loaded = load_checkpoint(args.checkpoint)
    files = find_cases(args.data)
    if args.split != "all":
        train = loaded.config.train
        ids = set(split_cases([f.case_id for f in files], train.split_fractions,
                              train.seed)[args.split])
        files = [f for f in files if f.case_id in ids]
    keys = sorted(loaded.thresholds, key=lambda k: loaded.thresholds[k])
    flagged = {k: 0 for k in keys}
    per_case: dict[str, dict[str, float]] = {}
    total = 0
    for f in files:
        case = load_case(f)
        result = drain(predict_volume(loaded, case, device=args.device))
        brain = np.asarray(case.brain_mask, bool)
        clean = lesion_free_slices(case)  # axial slices (last axis)
        values = np.asarray(result.anomaly)[:, :, clean][brain[:, :, clean]]
        if values.size == 0:
            continue
        total += values.size
        per_case[case.case_id] = {}
        for k in keys:
            n = int(np.count_nonzero(values >= loaded.thresholds[k]))
            flagged[k] += n
            per_case[case.case_id][k] = n / values.size
        print(f"{case.case_id}: {int(clean.sum())} lesion-free slices, {values.size} brain voxels",
              file=sys.stderr)
    if total == 0:
        print(f"{args.data}: no lesion-free brain slice", file=sys.stderr)
        return 1
    print(f"{args.checkpoint} on {args.data} ({args.split}: {len(per_case)} cases, {total} "
          "brain voxels of lesion-free slices)\n")
    print("| threshold | value | stated FPR | measured FPR (pooled) | per case (min–max) |")
    print("|---|---|---|---|---|")
    rows = {}
    for k in keys:
        stated = float(k[len("healthy_fpr"):]) / 100 if k.startswith("healthy_fpr") else None
        rates = [c[k] for c in per_case.values()]
        rows[k] = {"threshold": loaded.thresholds[k], "stated": stated,
                   "measured": flagged[k] / total, "min": min(rates), "max": max(rates)}
        print(f"| {k} | {loaded.thresholds[k]:.3f} | "
              f"{'–' if stated is None else f'{100 * stated:g} %'} | "
              f"{100 * flagged[k] / total:.2f} % | "
              f"{100 * min(rates):.2f}–{100 * max(rates):.2f} % |")
    if args.json is not None:
        args.json.write_text(json.dumps({"checkpoint": str(args.checkpoint),
                                         "data": str(args.data), "split": args.split,
                                         "voxels": total, "thresholds": rows,
                                         "per_case": per_case}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
