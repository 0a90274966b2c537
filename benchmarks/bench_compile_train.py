"""Does ``torch.compile`` pay for *training* the constrained model, and where is it correct?

Usage::

    .venv/bin/python benchmarks/bench_compile_train.py [--resolution 128] [--width 0.25]
        [--batch-size 32] [--iterations 10] [--precisions fp32,bf16] [--device cpu|cuda]
        [--threads N] [--json OUT.json]

The constrained step differentiates the Grad-CAM (``create_graph=True``): its loss is
differentiated twice through the encoder stages after ``cam_stage`` and once through the rest.
Compiled parts, each against eager in the same run:

- ``decoder``: ``ResNetVAE.decode`` (not in the Grad-CAM; first-order only);
- ``front``: ``features_at``, the stem and stages up to ``cam_stage`` (first-order only);
- ``whole``: the model's ``forward`` (the double backward then runs through AOTAutograd's
  compiled backward).

For each: the one-off first step (compiling), ms per step after it, and how far the parameter
gradients of one step are from eager's (relative L2 error; same weights, same batch, z = μ so no
noise differs). Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.device import cpu_bf16_units, resolve_device
from cavlog_core.methods import Batch, get_method

MODES = ("eager", "decoder", "front", "whole")


def _compiled(modules: torch.nn.ModuleDict, mode: str) -> torch.nn.ModuleDict:
    """A deep copy of ``modules`` with the part ``mode`` of the model compiled."""
    modules = copy.deepcopy(modules)
    net = modules["model"]
    net.reparameterize = lambda mu, logvar: mu  # no sampling noise: gradients comparable
    if mode == "decoder":
        net.decode = torch.compile(net.decode)
    elif mode == "front":
        net.features_at = torch.compile(net.features_at)
    elif mode == "whole":
        net.forward = torch.compile(net.forward)
    return modules


def _grads(method, modules, batch: Batch, autocast) -> torch.Tensor:
    """Flattened parameter gradients of one constrained step (the optimiser step has lr 0)."""
    opt = {"model": torch.optim.Adam(modules.parameters(), lr=0.0)}
    with autocast():
        method.training_step(modules, opt, batch, 0)
    return torch.cat([p.grad.float().flatten() for p in modules.parameters()
                      if p.grad is not None])


def measure(*, resolution: int, width: float, batch_size: int, iterations: int, precision: str,
            device: torch.device) -> Iterator[dict]:
    """Yield one row per mode of :data:`MODES` (eager first: the baseline of the others)."""
    r = resolution
    config = RunConfig(preprocess=PreprocessConfig(resolution=r),
                       model=ModelConfig(resolution=r, width=width),
                       train=TrainConfig(batch_size=batch_size, warmup_iterations=0))
    method = get_method("constrained")(config)
    torch.manual_seed(0)
    base = method.build().to(device).to(memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(0)
    images = (0.8 * torch.rand(batch_size, 1, r, r, generator=g)).to(device)
    batch = Batch(images.contiguous(memory_format=torch.channels_last),
                  torch.ones_like(images, dtype=torch.bool))

    def autocast():
        if precision == "bf16":
            return torch.autocast(device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows, reference = [], None
    for mode in MODES:
        torch._dynamo.reset()
        modules = _compiled(base, mode)
        tic = time.perf_counter()
        try:
            grads = _grads(method, modules, batch, autocast)  # compiles on the first call
        except RuntimeError as err:  # e.g. the Grad-CAM's gradient w.r.t. a compiled output
            yield {"mode": mode, "precision": precision, "fails": str(err).splitlines()[0]}
            continue
        sync()
        first = time.perf_counter() - tic
        if reference is None:
            reference = grads
        error = float((grads - reference).norm() / reference.norm())
        opts = method.optimizers(modules)
        with autocast():
            method.training_step(modules, opts, batch, 1)  # the optimiser's first step
            sync()
            tic = time.perf_counter()
            for it in range(iterations):
                method.training_step(modules, opts, batch, 2 + it)
            sync()
        ms = (time.perf_counter() - tic) / iterations * 1e3
        rows.append({"mode": mode, "precision": precision, "first_step_s": first,
                     "ms_per_step": ms, "grad_rel_error": error,
                     "speedup": rows[0]["ms_per_step"] / ms if rows else 1.0})
        yield rows[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rows = []
    for precision in args.precisions.split(","):
        if precision == "bf16" and device.type == "cpu" and not cpu_bf16_units():
            print("bf16: this CPU has no bf16 units (AMX / AVX-512-BF16); skipped")
            continue
        for row in measure(resolution=args.resolution, width=args.width,
                           batch_size=args.batch_size, iterations=args.iterations,
                           precision=precision, device=device):
            rows.append(row)
            what = f"{device.type} {args.resolution}² width {args.width} {precision:4s}"
            if "fails" in row:
                print(f"{what} {row['mode']:8s} fails: {row['fails']}", flush=True)
                continue
            print(f"{what} {row['mode']:8s} first step {row['first_step_s']:6.1f} s, "
                  f"{row['ms_per_step']:7.1f} ms/step ({row['speedup']:.2f}x eager), "
                  f"gradient error {row['grad_rel_error']:.1e}", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
