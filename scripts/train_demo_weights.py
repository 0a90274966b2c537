"""Reproduce the plugin's built-in demo weights (``napari_cavlog/weights/demo.pt``).

Synthesises the built-in dataset (``glioma`` preset, seed 7: synthetic data only, so the
weights' licence stays clean), trains the constrained Grad-CAM VAE at 128², width 0.25 (about
0.94 M parameters, 3.8 MB) on the lesion-free slices of the training subjects, and exports the
weights without the optimiser state. The attention is ``cam_weights="gradient-running-bn"``: the
paper's Grad-CAM, trained through the later BatchNorms' running statistics so that the map the
size constraint shapes is the map shown at inference (README, "Results"). The shipped file was
made with the defaults on the CPU at commit 1d1b2b8, on anatomy version 1 (timing in the
checkpoint's ``extra.train_seconds``); the script now synthesises version 2, whose model was not
shipped (docs/benchmark.md, "Real scans").

The map is the mean over the four flips of each slice (``ModelConfig.map_flips=4``, README,
"Flip-averaged maps"); the shipped file gained them at this step, with the same weights.

Last, the healthy thresholds (percentiles and the false-positive-rate ones, ``healthy:fpr1`` ...)
are recomputed with ``cavlog calibrate`` on 10 held-out healthy synthetic subjects (seed 11), so
the stated rates are measured on scans the model never saw. ``--calibrate-only`` redoes just
this step on an existing ``--out`` (same weights; with ``--map-flips``, for those flips).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, SynthConfig, TrainConfig
from cavlog_core._progress import drain
from cavlog_core.calibrate import calibrate
from cavlog_core.checkpoint import load_checkpoint, save_checkpoint
from cavlog_core.config import MAP_FLIPS
from cavlog_core.synth import ANATOMY_VERSION, dataset_anatomy_version, write_synthetic_dataset
from cavlog_core.training.fit import fit

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "src" / "napari_cavlog" / "weights" / "demo.pt"


def _current(data: Path) -> bool:
    """Whether ``data`` holds a synthetic dataset of this version of the anatomy."""
    meta = data / "dataset.json"
    return meta.is_file() and \
        dataset_anatomy_version(json.loads(meta.read_text())) == ANATOMY_VERSION


def calibrate_demo(checkpoint: Path, data: Path, map_flips: int | None = None) -> dict[str, float]:
    """Recompute ``checkpoint``'s healthy thresholds on held-out healthy synthetic subjects."""
    if not _current(data):
        drain(write_synthetic_dataset(data, SynthConfig(subjects=10, seed=11,
                                                        healthy_fraction=1.0)))
    tmp = checkpoint.with_name(checkpoint.name + ".calibrated")
    result = drain(calibrate(checkpoint, data, out=tmp, map_flips=map_flips))
    os.replace(tmp, checkpoint)
    return result.thresholds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synth_weights")
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo_weights")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--subjects", type=int, default=40)
    p.add_argument("--iterations", type=int, default=1000)
    # A short constrained phase: with longer ones the attention saturates (mean a -> 0.99 on
    # healthy slices) and the map flattens (docs/benchmark.md, "Constrained-phase length").
    p.add_argument("--warmup-iterations", type=int, default=800)
    p.add_argument("--cam-weights", default="gradient-running-bn")
    p.add_argument("--seed", type=int, default=7,
                   help="training seed (the synthetic data keep seed 7)")
    p.add_argument("--lam", type=float, default=TrainConfig().lam,
                   help="weight λ of the size constraint")
    p.add_argument("--t", type=float, default=TrainConfig().t,
                   help="log-barrier parameter t of the size constraint")
    p.add_argument("--latent-dim", type=int, default=ModelConfig().latent_dim,
                   help="size of the dense latent z")
    p.add_argument("--map-flips", type=int, choices=MAP_FLIPS, default=4,
                   help="test-time flips of the map (ModelConfig.map_flips)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--calib-data", type=Path, default=ROOT / "data" / "synth_calib")
    p.add_argument("--calibrate-only", action="store_true",
                   help="only recompute the thresholds of --out on the held-out healthy set")
    args = p.parse_args()
    if args.calibrate_only:
        print(json.dumps(calibrate_demo(args.out, args.calib_data, args.map_flips), indent=2))
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if not _current(args.data):
        drain(write_synthetic_dataset(args.data, SynthConfig(subjects=args.subjects, seed=7)))
    print(f"synthetic data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    config = RunConfig(
        preprocess=PreprocessConfig(resolution=128, slices="brain"),
        model=ModelConfig(resolution=128, width=0.25, latent_dim=args.latent_dim,
                          cam_weights=args.cam_weights, map_flips=args.map_flips),
        train=TrainConfig(iterations=args.iterations, warmup_iterations=args.warmup_iterations,
                          lr=3e-4, checkpoint_every=500, lam=args.lam, t=args.t,
                          device=args.device, split_fractions=(0.9, 0.1, 0.0), seed=args.seed),
    )
    if args.run.exists():
        shutil.rmtree(args.run)
    t1 = time.perf_counter()

    def show(event) -> None:
        if event.iteration % 250 == 0 and event.phase in ("warmup", "constrained"):
            print(f"it {event.iteration}: loss {event.losses.get('loss', float('nan')):.4f} "
                  f"mean_fc {event.mean_fc:+.3f} {event.images_per_s:.0f} img/s", flush=True)

    result = drain(fit(config, args.data, out_dir=args.run), show)
    train_s = time.perf_counter() - t1
    loaded = load_checkpoint(result.checkpoint_path)
    save_checkpoint(args.out, method=loaded.method, modules=loaded.modules, optimizers=None,
                    iteration=result.iterations, total_iterations=result.iterations,
                    thresholds=result.thresholds, healthy_fc_satisfied=result.healthy_fc_satisfied,
                    extra={"trained_by": "scripts/train_demo_weights.py",
                           "train_seconds": round(train_s, 1), "subjects": args.subjects,
                           "lesions": SynthConfig().lesions})
    summary = {"out": str(args.out), "bytes": args.out.stat().st_size, "train_seconds": train_s,
               "healthy_fc_satisfied": result.healthy_fc_satisfied,
               **calibrate_demo(args.out, args.calib_data)}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
