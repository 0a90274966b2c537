"""``cavlog train DATA --out RUN_DIR``: train a method on the healthy slices of a dataset."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from ..config import (
    CAM_WEIGHTS,
    CONSTRAINTS,
    MAP_FLIPS,
    NORMALIZATIONS,
    RECONS,
    ModelConfig,
    PreprocessConfig,
    RunConfig,
    TrainConfig,
)
from ..methods import get_method
from ..methods.base import parse_option_assignments
from ._common import add_device_option, add_slices_option, existing_path, float_tuple

PRE, MOD, TRN = PreprocessConfig(), ModelConfig(), TrainConfig()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog train`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "train",
        help="train a method on the lesion-free slices of a dataset",
        description="Train the constrained Grad-CAM VAE (or another --method) on the healthy "
                    "(lesion-free) slices of the train split of DATA. Writes RUN_DIR/"
                    "checkpoint.pt, config.json and log.jsonl. Under `torchrun "
                    "--nproc-per-node N -m cavlog_core train ...` it trains with DDP.",
    )
    p.add_argument("data", type=existing_path, help="dataset root, case folder or NIfTI file")
    p.add_argument("--out", required=True, type=Path, help="run folder (created)")
    p.add_argument("--resume", action="store_true",
                   help="continue RUN_DIR/checkpoint.pt to its total iterations (its stored "
                        "settings are used; only --device and --no-amp apply)")
    add_model_options(p)
    add_train_options(p)
    return p


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Add the model and preprocessing options (defaults from ``cavlog_core.config``)."""
    g = p.add_argument_group("model and preprocessing")
    g.add_argument("--method", default=TRN.method,
                   help=f"method to train (see `cavlog methods`); default {TRN.method}")
    g.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="one of the method's own hyper-parameters (repeatable), e.g. "
                        "--method f-anogan --option n_critic=3; `cavlog methods --options` "
                        "lists them with their defaults; saved in the checkpoint")
    g.add_argument("--resolution", type=int, default=MOD.resolution,
                   help=f"square input side, a multiple of 32 (224, 128, 64); "
                        f"default {MOD.resolution}")
    g.add_argument("--width", type=float, default=MOD.width,
                   help=f"channel multiplier (0.25 for a CPU-friendly model); default {MOD.width}")
    g.add_argument("--latent-dim", type=int, default=MOD.latent_dim,
                   help=f"size of z; default {MOD.latent_dim}")
    g.add_argument("--cam-stage", type=int, choices=(1, 2, 3, 4), default=MOD.cam_stage,
                   help=f"encoder stage of the Grad-CAM; default {MOD.cam_stage}")
    g.add_argument("--cam-weights", choices=CAM_WEIGHTS, default=MOD.cam_weights,
                   help="how the attention map is formed: gradient (the paper's Grad-CAM), "
                        "gradient-running-bn (Grad-CAM trained through the later BatchNorms' "
                        "running statistics, the map shown at inference), gradient-frozen-bn "
                        "(the later BatchNorms' batch statistics held constant) or mean (channel "
                        f"mean of the activations, as the authors' code); default "
                        f"{MOD.cam_weights}")
    g.add_argument("--map-flips", type=int, choices=MAP_FLIPS, default=MOD.map_flips,
                   help="test-time flips of the map: 1 (one pass, the paper), 2 (mean with the "
                        "left-right mirror) or 4 (mean over the four flips: one Grad-CAM pass "
                        "lights a lesion off-centre, the flips' mean centres it); 1x, 2x, 4x the "
                        f"inference time; default {MOD.map_flips}")
    g.add_argument("--normalization", choices=NORMALIZATIONS, default=PRE.normalization,
                   help="intensity normalisation: percentile (brain p1-p99 to [0, 1]) or "
                        "max-histogram (the authors' code: per-volume maximum, then per-slice "
                        f"histogram matching to a healthy reference); default "
                        f"{PRE.normalization}")
    g.add_argument("--dropout", type=float, default=MOD.dropout,
                   help=f"dropout on the latent code; default {MOD.dropout}")
    add_slices_option(g)
    g.add_argument("--cache-dir", type=Path, default=None,
                   help="slice cache folder (default: DATA/.cavlog_cache or ~/.cache/cavlog)")


def add_train_options(p: argparse.ArgumentParser) -> None:
    """Add the training options (defaults from :class:`~cavlog_core.config.TrainConfig`)."""
    g = p.add_argument_group("training")
    g.add_argument("--iterations", type=int, default=TRN.iterations,
                   help=f"batches to train; default {TRN.iterations}")
    g.add_argument("--epochs", type=int, default=TRN.epochs,
                   help="passes over the healthy slices (overrides --iterations)")
    g.add_argument("--warmup-iterations", type=int, default=TRN.warmup_iterations,
                   help=f"first batches with the VAE loss only; default {TRN.warmup_iterations}")
    g.add_argument("--batch-size", type=int, default=TRN.batch_size,
                   help=f"global batch size (split across DDP ranks); default {TRN.batch_size}")
    g.add_argument("--lr", type=float, default=TRN.lr, help=f"Adam learning rate; default {TRN.lr}")
    g.add_argument("--beta", type=float, default=TRN.beta, help=f"KL weight; default {TRN.beta}")
    g.add_argument("--p", type=float, default=TRN.p,
                   help=f"constraint margin: healthy attention should cover 1-p; default {TRN.p}")
    g.add_argument("--t", type=float, default=TRN.t,
                   help=f"log-barrier parameter t; default {TRN.t}")
    g.add_argument("--lam", type=float, default=TRN.lam,
                   help=f"constraint weight lambda; default {TRN.lam}")
    g.add_argument("--constraint", choices=CONSTRAINTS,
                   default=TRN.constraint, help=f"attention penalty; default {TRN.constraint}")
    g.add_argument("--t-growth", type=float, default=TRN.t_growth,
                   help=f"multiply t by this every --t-every iterations after warm-up; "
                        f"default {TRN.t_growth} (constant t)")
    g.add_argument("--t-every", type=int, default=TRN.t_every,
                   help=f"iterations between t updates; default {TRN.t_every}")
    g.add_argument("--recon", choices=RECONS, default=TRN.recon,
                   help=f"reconstruction loss; default {TRN.recon}")
    add_device_option(g)
    g.add_argument("--seed", type=int, default=TRN.seed, help=f"random seed; default {TRN.seed}")
    g.add_argument("--split-fractions", type=float_tuple(3), default=TRN.split_fractions,
                   metavar="TRAIN,VAL,TEST",
                   help="patient-level split (1,0,0 trains on every case); default "
                        + ",".join(f"{f:g}" for f in TRN.split_fractions))
    g.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    g.add_argument("--log-every", type=int, default=TRN.log_every,
                   help=f"iterations between log.jsonl lines; default {TRN.log_every}")
    g.add_argument("--checkpoint-every", type=int, default=TRN.checkpoint_every,
                   help=f"iterations between checkpoints; default {TRN.checkpoint_every}")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Return the :class:`RunConfig` the options describe (invalid values raise ``CavlogError``)."""
    return RunConfig(
        preprocess=PreprocessConfig(resolution=args.resolution, slices=args.slices,
                                    normalization=args.normalization),
        model=ModelConfig(resolution=args.resolution, width=args.width,
                          latent_dim=args.latent_dim, cam_stage=args.cam_stage,
                          dropout=args.dropout,
                          cam_weights=args.cam_weights, map_flips=args.map_flips),
        train=TrainConfig(
            method=args.method, iterations=args.iterations, epochs=args.epochs,
            warmup_iterations=args.warmup_iterations, batch_size=args.batch_size, lr=args.lr,
            beta=args.beta, p=args.p, t=args.t, lam=args.lam, constraint=args.constraint,
            t_growth=args.t_growth, t_every=args.t_every, recon=args.recon, device=args.device,
            seed=args.seed, split_fractions=tuple(args.split_fractions), amp=not args.no_amp,
            log_every=args.log_every, checkpoint_every=args.checkpoint_every,
            method_options=method_options(args.method, args.option),
        ),
    )


def method_options(method: str, assignments: list[str]) -> dict[str, Any]:
    """Return the typed options of ``method`` given as ``NAME=VALUE`` texts (only those given).

    Raises
    ------
    CavlogError
        Unknown method or option, or a value of the wrong type or range.
    """
    given = parse_option_assignments(assignments)
    options = get_method(method).Options.from_mapping(given, method=method).to_dict()
    return {name: options[name] for name in given}


def drive(gen: Generator[Any, None, Any], *, desc: str, out_dir: Path | None = None) -> Any:
    """Run a :func:`~cavlog_core.training.fit` generator with a tqdm bar; return its result.

    SIGINT / SIGTERM stop it at the next iteration: the generator is closed, which writes a
    resumable checkpoint, and :class:`~cavlog_core.cli._signals.Interrupted` says where it is.
    """
    from tqdm import tqdm

    from ._signals import stop_on_signals

    show = os.environ.get("RANK", "0") == "0"
    bar = None
    done = 0
    try:
        with stop_on_signals() as stop:
            while True:
                if stop.requested:
                    gen.close()  # fit saves every completed iteration on close
                    raise stop.interrupted(_stopped(done, out_dir, desc))
                try:
                    ev = next(gen)
                except StopIteration as result:
                    return result.value
                if bar is None:  # created on the first event, so early errors print no bar
                    bar = tqdm(desc=desc, unit="it", disable=not show, dynamic_ncols=True,
                               file=sys.stderr)
                if ev.phase in ("warmup", "constrained"):
                    done = ev.iteration
                _show(bar, ev, desc)
    finally:
        if bar is not None:
            bar.close()
        gen.close()


def _stopped(done: int, out_dir: Path | None, command: str) -> str:
    ckpt = None if out_dir is None else Path(out_dir) / "checkpoint.pt"
    if done and ckpt is not None and ckpt.is_file():
        return (f"stopped after iteration {done}; resumable checkpoint {ckpt} "
                f"(continue with: cavlog {command} ... --out {out_dir} --resume)")
    return "stopped before the first training iteration; nothing to resume"


def _show(bar, ev, desc: str) -> None:
    if ev.phase == "prepare":
        done = next((v for k, v in ev.losses.items() if k.endswith("_done")), 0)
        tot = next((v for k, v in ev.losses.items() if k.endswith("_total")), 0)
        bar.set_description(f"{desc}: loading cases {int(done)}/{int(tot)}", refresh=False)
        bar.update(0)  # redraws at most every mininterval
    elif ev.phase in ("warmup", "constrained"):
        if bar.total != ev.total_iterations:
            bar.reset(total=ev.total_iterations)
            bar.n = ev.iteration - 1
        bar.set_description(f"{desc} ({ev.phase})", refresh=False)
        if "loss" in ev.losses:  # on a GPU only every log_every-th event carries the losses
            post = {"loss": f"{ev.losses['loss']:.4g}"}
            if "mean_fc" in ev.losses:
                post["mean_fc"] = f"{ev.mean_fc:+.3f}"
            post["img/s"] = f"{ev.images_per_s:.1f}"
            bar.set_postfix(post, refresh=False)
        bar.update(ev.iteration - bar.n)
    elif ev.phase == "validate":
        bar.set_description(f"{desc}: healthy thresholds {ev.losses['validated']:.0%}",
                            refresh=False)
        bar.update(0)


def print_summary(result) -> None:
    """Print a finished run: checkpoint, healthy f_c share and the healthy thresholds."""
    print(f"checkpoint: {result.checkpoint_path}")
    print(f"iterations: {result.iterations}")
    if result.healthy_fc_satisfied is not None:
        print(f"healthy slices with f_c(a) <= 0: {100 * result.healthy_fc_satisfied:.1f} %")
    if result.thresholds:
        print("healthy thresholds: " + "  ".join(
            f"{k.removeprefix('healthy_')}={v:.3f}" for k, v in result.thresholds.items()))
    print(f"log: {result.history_path}")


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog train`` with parsed ``args``; return the exit status."""
    from ..training import fit

    config = config_from_args(args)
    gen = fit(config, args.data, out_dir=args.out, resume=args.resume, cache_dir=args.cache_dir)
    result = drive(gen, desc="train", out_dir=args.out)
    if os.environ.get("RANK", "0") == "0":
        print_summary(result)
    return 0
