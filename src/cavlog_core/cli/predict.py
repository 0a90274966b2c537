"""``cavlog predict CHECKPOINT INPUT --out DIR``: anomaly maps and lesion masks as NIfTI."""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from ._common import INF, add_inference_options, existing_path, output_dir, require


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog predict`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "predict",
        help="write anomaly maps and lesion masks for scans",
        description="For every case of INPUT (a case folder, a NIfTI file or a dataset root), "
                    "compute the normalised anomaly map of every axial slice with brain and "
                    "write DIR/<ID>_anomaly.nii.gz (float32 in [0, 1]) and DIR/<ID>_mask.nii.gz "
                    "(uint8, map >= threshold inside the brain) in the input's geometry, and "
                    "DIR/<ID>_lesions.csv (one row per 3-D lesion, volume_ml, centroid, max "
                    "score, slices).",
    )
    p.add_argument("checkpoint", type=existing_path, help="checkpoint.pt written by cavlog train")
    p.add_argument("input", type=existing_path, help="case folder, NIfTI file or dataset root")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--threshold", default=INF.threshold,
                   help=f"mask threshold: a number in [0, 1] (default {INF.threshold}, the "
                        "paper's), "
                        "'healthy' (= the checkpoint's healthy_p95) or 'healthy:pXX' "
                        "(p85, p90, p95, p98, p99: percentiles of maps of healthy slices) or "
                        "'healthy:fprX' (fpr0.5, fpr1, fpr5: the value above which X %% of "
                        "healthy validation brain voxels fall, an expected false-positive rate)")
    p.add_argument("--min-lesion-ml", type=float, default=None, metavar="ML",
                   help="lesions (3-D connected components of the mask) smaller than this are "
                        "left out of <ID>_lesions.csv; default: the checkpoint's, set from "
                        "healthy scans by cavlog calibrate (95 %% of the spurious components "
                        "on healthy tissue are smaller), else 0.05 mL")
    add_inference_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog predict`` with parsed ``args``; return the exit status."""
    from .._atomic import remove_stale_temporaries
    from .._lock import folder_lock
    from ..checkpoint import load_checkpoint
    from ..data.io import find_cases, iter_loaded_cases
    from ..device import resolve_device, warn_if_cpu_fallback
    from ..maps.thresholds import parse_threshold

    require(args.batch_size >= 1, f"--batch-size {args.batch_size}: must be >= 1")
    require(args.min_lesion_ml is None or args.min_lesion_ml >= 0,
            f"--min-lesion-ml {args.min_lesion_ml}: must be >= 0")
    output_dir(args.out)
    cases = find_cases(args.input)
    device = resolve_device(args.device)
    warn_if_cpu_fallback(args.device, device)
    loaded = load_checkpoint(args.checkpoint, device=device)
    threshold, label = parse_threshold(args.threshold, loaded.thresholds)
    if args.min_lesion_ml is None:
        from ..lesions import min_lesion_ml

        args.min_lesion_ml = min_lesion_ml(loaded.meta)
    # The folder is created (and locked against a second predict) only once the inputs are good.
    with folder_lock(args.out, what="another cavlog predict"):
        remove_stale_temporaries(args.out)
        # A pipeline of three: the next scan is decoded on one thread while this one is
        # computed, and the previous one's outputs are compressed and written on another
        # (gzip and NIfTI coding release the GIL). Writes finish in order; a failed write
        # raises before the next one starts, and leaving the pool waits for the one in flight
        # (each file is written atomically, so nothing half-written is left either way).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavlog-write") as writer:
            pending: Future[None] | None = None
            for case in iter_loaded_cases(cases):
                t0 = time.perf_counter()
                result = _infer(args, case, loaded, device)
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_outputs, args, case, result, threshold, label, t0)
            if pending is not None:
                pending.result()
    return 0


def _infer(args: argparse.Namespace, case, loaded, device):
    import warnings

    import numpy as np
    from tqdm import tqdm

    from .._progress import drain
    from ..inference.predict import predict_volume

    gen = predict_volume(loaded, case, batch_size=args.batch_size, device=device,
                         precision=args.precision)
    with tqdm(desc=case.case_id, unit="slice", file=sys.stderr, dynamic_ncols=True,
              leave=False) as bar:

        def show(ev) -> None:
            bar.total = ev.total
            bar.update(ev.done - bar.n)

        result = drain(gen, show)
    brain_values = result.anomaly[case.brain_mask]
    if brain_values.size and float(np.ptp(brain_values)) == 0.0:
        warnings.warn(f"{case.case_id}: the anomaly map is constant inside the brain "
                      f"({float(brain_values[0]):g}); the model gives no usable map",
                      RuntimeWarning, stacklevel=1)
    return result


def _write_outputs(args: argparse.Namespace, case, result, threshold: float, label: str,
                   t0: float) -> None:
    import numpy as np

    from ..data.io import save_like
    from ..lesions import find_lesions, write_lesions_csv
    from ..maps.thresholds import mask_in_brain

    mask = mask_in_brain(result.anomaly, case.brain_mask, threshold)
    out: Path = args.out
    map_path = save_like(result.anomaly, case, out / f"{case.case_id}_anomaly.nii.gz")
    mask_path = save_like(mask.astype(np.uint8), case, out / f"{case.case_id}_mask.nii.gz")
    table = find_lesions(mask, affine=case.affine, scores=result.anomaly,
                         min_volume_ml=args.min_lesion_ml)
    csv_path = write_lesions_csv(table, out / f"{case.case_id}_lesions.csv")
    print(f"{case.case_id}: {len(result.z)} slices in {time.perf_counter() - t0:.1f} s; "
          f"{map_path}, {mask_path} ({int(mask.sum())} voxels >= {threshold:.4g} [{label}]); "
          f"{len(table.lesions)} lesion(s) >= {args.min_lesion_ml:g} mL, "
          f"{table.total_ml:.2f} mL in all: {csv_path}")
