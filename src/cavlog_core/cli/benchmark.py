"""``cavlog benchmark DATA --out DIR``: every method (Table 1) or one ablation, resumable."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path

from ..config import MAP_FLIPS, ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from ..errors import CavlogError
from ._common import add_device_option, existing_path, float_tuple, require

PRE, MOD, TRN = PreprocessConfig(), ModelConfig(), TrainConfig()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog benchmark`` (its options and help) on ``subparsers``."""
    from ..benchmark.settings import ABLATIONS

    p = subparsers.add_parser(
        "benchmark",
        help="compare every method (Table 1) or run an ablation, with seeds; resumable",
        description="Train and evaluate methods on one fixed patient split of DATA with the same "
                    "preprocessing and budget. Each run goes to DIR/<method or setting>/seed<k>/ "
                    "(checkpoint, logs, result.json); finished runs are skipped when the command "
                    "is repeated. Writes DIR/summary.md and PR-curve plots.",
    )
    p.add_argument("data", type=existing_path, help="dataset root with ground truth")
    p.add_argument("--out", required=True, type=Path, help="benchmark folder (created)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--methods", default="all",
                      help="'all' or comma-separated names (see `cavlog methods`); default all")
    what.add_argument("--ablation", choices=sorted(ABLATIONS),
                      help="run one of the paper's ablations (with the constrained method) "
                           "instead of the methods table")
    p.add_argument("--seeds", type=_seeds, default=3,
                   help="N (training seeds 0..N-1) or a list like 1,2 (one seed k: 'k,'); "
                        "default 3")
    p.add_argument("--keep-going", action="store_true",
                   help="report a failing run and continue with the next one")
    p.add_argument("--summarize-only", action="store_true",
                   help="train nothing: rewrite the summary from the runs that have a result")
    g = p.add_argument_group("shared configuration (every run)")
    g.add_argument("--resolution", type=int, default=MOD.resolution,
                   help=f"model input side (64, 128, 224 ...); default {MOD.resolution}")
    g.add_argument("--width", type=float, default=MOD.width,
                   help=f"channel multiplier; default {MOD.width}")
    g.add_argument("--latent-dim", type=int, default=MOD.latent_dim,
                   help=f"size of z; default {MOD.latent_dim}")
    g.add_argument("--map-flips", type=int, choices=MAP_FLIPS, default=MOD.map_flips,
                   help="test-time flips of every method's map (1: one pass, the paper; 2: "
                        f"with the left-right mirror; 4: all four flips); default {MOD.map_flips}")
    g.add_argument("--iterations", type=int, default=TRN.iterations,
                   help=f"training batches per run (the shared budget); default {TRN.iterations}")
    g.add_argument("--warmup-iterations", type=int, default=TRN.warmup_iterations,
                   help=f"VAE-only batches before attention losses; default "
                        f"{TRN.warmup_iterations}")
    g.add_argument("--batch-size", type=int, default=TRN.batch_size,
                   help=f"batch size; default {TRN.batch_size}")
    g.add_argument("--lr", type=float, default=TRN.lr, help=f"Adam learning rate; default {TRN.lr}")
    g.add_argument("--slices", default=PRE.slices,
                   help=f"training slices: 'central:N' or 'brain' (lesion-free ones are used); "
                        f"default {PRE.slices}")
    g.add_argument("--eval-slices", default=PRE.slices,
                   help=f"test slices ('central:N' or 'brain'); default {PRE.slices}")
    g.add_argument("--split-fractions", type=float_tuple(3), default=TRN.split_fractions,
                   help="TRAIN,VAL,TEST patient fractions; default "
                        + ",".join(f"{f:g}" for f in TRN.split_fractions))
    g.add_argument("--split-seed", type=int, default=0,
                   help="seed of the patient split shared by all runs; default 0")
    g.add_argument("--all-pixels", action="store_true",
                   help="pool every pixel of the slices (the paper) instead of the brain only")
    add_device_option(g)
    g.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="slice cache folder (default: DATA/.cavlog_cache or ~/.cache/cavlog)")
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads per process (1 is fastest on a busy machine); "
                        "default torch's, or the cores shared out with --parallel")
    p.add_argument("--parallel", type=int, default=1, metavar="N",
                   help="N processes share the runs (each takes the next run no other holds, "
                        "through the per-run locks): small models fill one GPU this way; on "
                        "CPUs give each a core. The others log to DIR/worker<i>.log; this one "
                        "shows the progress of all and writes the summary. Default 1")
    p.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)  # --parallel's
    return p


def _seeds(text: str) -> int | tuple[int, ...]:
    try:
        if "," in text:
            return tuple(int(v) for v in text.split(",") if v.strip())
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or comma-separated seeds") \
            from None


def _config(args: argparse.Namespace) -> RunConfig:
    return RunConfig(
        preprocess=PreprocessConfig(resolution=args.resolution, slices=args.slices),
        model=ModelConfig(resolution=args.resolution, width=args.width,
                          latent_dim=args.latent_dim, map_flips=args.map_flips),
        train=TrainConfig(iterations=args.iterations, warmup_iterations=args.warmup_iterations,
                          batch_size=args.batch_size, lr=args.lr, device=args.device,
                          split_fractions=tuple(args.split_fractions), amp=not args.no_amp),
    )


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog benchmark`` with parsed ``args``; return the exit status."""
    import torch
    from tqdm import tqdm

    from ..benchmark import BenchmarkConfig, benchmark
    from ..benchmark.report import aggregate

    require(args.parallel >= 1, f"--parallel {args.parallel}: must be >= 1")
    if args.parallel > 1 and not args.summarize_only and args.threads is None:
        args.threads = max(1, (os.cpu_count() or 1) // args.parallel)
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    base = _config(args)
    if base.train.warmup_iterations >= base.train.iterations:
        warnings.warn(f"--warmup-iterations {base.train.warmup_iterations} >= --iterations "
                      f"{base.train.iterations}: attention losses (constrained, CAVGA and the "
                      "ablations) never switch on", RuntimeWarning, stacklevel=1)
    cfg = BenchmarkConfig(
        data=args.data, out=args.out, base=base, methods=args.methods, ablation=args.ablation,
        seeds=args.seeds, split_seed=args.split_seed, eval_slices=args.eval_slices,
        all_pixels=args.all_pixels, cache_dir=args.cache_dir,
        summarize_only=args.summarize_only, keep_going=args.keep_going,
        command="cavlog " + " ".join(shlex.quote(a) for a in _argv(args)),
        write_summary=not args.no_summary,
    )
    # With --parallel the helpers start once this process has validated the arguments and
    # filled the slice cache (its first event after "prepare"), so they do not all preprocess
    # the same cases; they take the runs this one does not hold and write no summary.
    spawn = args.parallel > 1 and not args.summarize_only
    workers: list[subprocess.Popen] = []
    gen = benchmark(cfg)
    bar = None
    last = 0.0
    try:
        while True:
            ev = next(gen)
            if ev.stage == "prepare":
                continue
            if spawn and not workers:
                workers = _start_workers(args, args.parallel - 1)
            if bar is None:
                bar = tqdm(total=ev.total_runs, unit="run", desc="benchmark", dynamic_ncols=True)
            if ev.stage == "failed":
                bar.update(1)
                bar.write(f"{ev.label} seed{ev.seed}: FAILED: {ev.message}")
            elif ev.stage in ("skip", "done"):
                bar.update(1)
                scores = " ".join(f"{k}={v:.3f}" for k, v in ev.metrics.items())
                bar.write(f"{ev.label} seed{ev.seed}: {'skipped, ' if ev.stage == 'skip' else ''}"
                          f"{scores}")
            elif ev.stage in ("train", "evaluate", "wait") and time.monotonic() - last > 0.5:
                last = time.monotonic()
                bar.set_postfix_str(f"{ev.label} seed{ev.seed} {ev.stage} "
                                    f"{ev.step}/{ev.total_steps}")
    except StopIteration as stop:
        result = stop.value
    finally:
        if bar is not None:
            bar.close()
        failed_workers = _finish_workers(workers)
    groups = aggregate(result.results)
    print(f"{len(result.results)} runs ({sum(r.skipped for r in result.results)} skipped) of "
          f"{len(groups)} settings in {result.seconds / 60:.1f} min")
    for name, why in result.failed.items():
        print(f"failed: {name}: {why}")
    if result.missing:
        print(f"without a result: {', '.join(result.missing)}")
    if result.summary_path is not None:
        print(f"summary: {result.summary_path}")
    for p in result.plots:
        print(f"plot: {p}")
    if failed_workers:
        raise CavlogError(f"{len(failed_workers)} of {args.parallel - 1} worker(s) failed: see "
                          + ", ".join(failed_workers))
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    return list(getattr(args, "_argv", sys.argv[1:]))


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """Return the command's arguments for a helper: no ``--parallel``, ``--threads`` given."""
    out: list[str] = []
    skip = False
    for a in _argv(args):
        if skip:
            skip = False
        elif a in ("--parallel", "--threads"):
            skip = True
        elif not a.startswith(("--parallel=", "--threads=")):
            out.append(a)
    return [*out, "--threads", str(args.threads), "--no-summary"]


def _start_workers(args: argparse.Namespace, n: int) -> list[subprocess.Popen]:
    args.out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "cavlog_core", *_worker_argv(args)]
    workers = []
    for i in range(1, n + 1):
        with open(args.out / f"worker{i}.log", "w") as log:  # the child keeps its own handle
            workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL))
    print(f"{n} more worker process(es) share the runs: logs {args.out}/worker*.log",
          file=sys.stderr)
    return workers


def _finish_workers(workers: list[subprocess.Popen]) -> list[str]:
    """Wait for the workers (stopping them if this process stops early); return failed logs."""
    if sys.exc_info()[0] is not None:  # leaving on an error or Ctrl-C: the workers stop too
        for w in workers:
            if w.poll() is None:
                w.terminate()  # SIGTERM: a run in progress is left to resume
    failed = []
    for i, w in enumerate(workers, start=1):
        if w.wait() != 0:
            failed.append(f"worker{i}.log (exit {w.returncode})")
    return failed
