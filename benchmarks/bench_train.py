"""Training throughput of the constrained method (images/s), any device.

``python benchmarks/bench_train.py --resolution 224 --width 1 --device cuda`` measures the paper's
configuration (batch 32; bf16 autocast and channels-last on CUDA, fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import time

import torch

from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
from cavlog_core.device import resolve_device
from cavlog_core.methods import Batch, get_method


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    dev = resolve_device(args.device)
    r = args.resolution
    config = RunConfig(preprocess=PreprocessConfig(resolution=r),
                       model=ModelConfig(resolution=r, width=args.width),
                       train=TrainConfig(batch_size=args.batch_size, warmup_iterations=0))
    method = get_method("constrained")(config)
    modules = method.build().to(dev)
    if dev.type == "cuda":
        modules = modules.to(memory_format=torch.channels_last)
    optimizers = method.optimizers(modules)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch_size, 1, r, r, generator=g).to(dev)
    brain = torch.ones_like(images, dtype=torch.bool)
    batch = Batch(images=images, brain=brain)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" \
        else torch.autocast("cpu", enabled=False)

    def step(it: int) -> None:
        with amp:
            method.training_step(modules, optimizers, batch, it)

    for it in range(3):
        step(it)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for it in range(args.iterations):
        step(it + 3)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    n_params = sum(p.numel() for p in modules.parameters())
    print(f"{dev} {r}² width {args.width} ({n_params / 1e6:.2f} M params) "
          f"batch {args.batch_size}: "
          f"{args.iterations * args.batch_size / dt:.0f} images/s, "
          f"{dt / args.iterations * 1e3:.1f} ms/it")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
