"""Time ``predict_volume`` on one synthetic 240x240x155 volume (random-initialised ResNetVAE).

Usage::

    .venv/bin/python benchmarks/bench_inference.py [--widths 1,0.25] [--resolution 224]
        [--batch-size 32] [--device auto] [--repeats 1] [--threads N]

Prints seconds per volume and slices per second for each width. Budget (issue 3): one volume at
224², width 1, in <= 12 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from cavlog_core.checkpoint import LoadedCheckpoint
from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig
from cavlog_core.data.io import case_from_arrays
from cavlog_core.device import resolve_device
from cavlog_core.inference.predict import predict_volume
from cavlog_core.methods import get_method
from cavlog_core.synth import generate_subject


def random_checkpoint(resolution: int, width: float, device: torch.device) -> LoadedCheckpoint:
    """The paper's method with random weights (speed does not depend on the weights)."""
    torch.manual_seed(0)
    config = RunConfig(preprocess=PreprocessConfig(resolution=resolution),
                       model=ModelConfig(resolution=resolution, width=width))
    method = get_method("constrained")(config)
    modules = method.build().to(device).eval()
    return LoadedCheckpoint(method, modules, config, {}, {})


def run_once(loaded: LoadedCheckpoint, case, *, batch_size: int,
             device: str) -> tuple[float, float, int]:
    """``(wall seconds, CPU seconds of this process, slices)`` for one volume."""
    t0, c0 = time.perf_counter(), time.process_time()
    gen = predict_volume(loaded, case, batch_size=batch_size, device=device)
    n = 0
    try:
        while True:
            next(gen)
            n += 1
    except StopIteration as stop:
        result = stop.value
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    assert result.anomaly.shape == case.shape and len(result.z) == n
    return time.perf_counter() - t0, time.process_time() - c0, n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--widths", default="1,0.25")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    subject = generate_subject(0, (240, 240, 155), healthy=False)
    case = case_from_arrays(subject.flair, seg=subject.seg, brain_mask=subject.brain,
                            case_id="SYN_BENCH")
    print(f"device={dev} threads={torch.get_num_threads()} resolution={args.resolution} "
          f"batch={args.batch_size} torch={torch.__version__}")
    for width in (float(w) for w in args.widths.split(",")):
        loaded = random_checkpoint(args.resolution, width, dev)
        run_once(loaded, case, batch_size=args.batch_size, device=str(dev))  # warm-up
        runs = [run_once(loaded, case, batch_size=args.batch_size, device=str(dev))
                for _ in range(args.repeats)]
        best, cpu, n = min(runs)
        # CPU seconds show the work done even when other processes share the cores.
        print(f"width={width:g}: {n} slices, {best:.2f} s/volume (best of {len(runs)}), "
              f"{n / best:.1f} slices/s, {cpu:.2f} CPU-s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
