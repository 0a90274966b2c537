"""Does ``torch.compile`` pay for the Grad-CAM? Eager against compiled, side by side.

Usage::

    .venv/bin/python benchmarks/bench_compile.py [--resolution 224] [--width 1]
        [--batch-size 32] [--slices 138] [--threads N] [--precisions fp32,bf16]
        [--device cpu|cuda] [--json OUT.json]

Times the inference Grad-CAM (:func:`~cavlog_core.models.gradcam.encoder_cam` on the
:func:`~cavlog_core.inference.predict.inference_modules` twin: BatchNorm folded, channels-last) on
``--slices`` random slices of the CPU (or of the GPU with ``--device cuda``), fp32 and bf16, eager
and with the two encoder halves (``features_at``, ``encode_from``) wrapped in ``torch.compile``
(inductor; the backward of ``encode_from`` is compiled by AOTAutograd). Prints seconds per volume-
sized stack, the speed-up over eager in the same run, the one-off compile time and the correlation
of the compiled maps with the eager ones (issue 10 asks for >= 0.999). ``benchmarks/speed.py``
reports the fp32 row through :func:`compare`.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import torch
from bench_inference import random_checkpoint  # a sibling script: benchmarks/ is sys.path[0]

from cavlog_core.device import cpu_bf16_units
from cavlog_core.inference.predict import inference_modules
from cavlog_core.models.gradcam import encoder_cam


def _model(resolution: int, width: float, device: torch.device):
    """The inference twin of the paper's model with random weights (seed 0)."""
    return inference_modules(random_checkpoint(resolution, width, device).modules, device)["model"]


def _cams(model, stack: torch.Tensor, batch: int, bf16: bool) -> torch.Tensor:
    device = stack.device
    ctx = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    out = []
    with ctx:
        for s in range(0, len(stack), batch):
            out.append(encoder_cam(model, stack[s:s + batch]).float())
    cams = torch.cat(out)
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # time the work, not its launch
    return cams


def _best(repeats: int, *args) -> float:
    """Best wall time of ``_cams(*args)`` over ``repeats`` calls."""
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        _cams(*args)
        best = min(best, time.perf_counter() - tic)
    return best


def compare(*, resolution: int = 224, width: float = 1.0, slices: int = 138,
            batch_size: int = 32, precision: str = "fp32", repeats: int = 2,
            device: str = "cpu") -> dict[str, float]:
    """Eager against compiled Grad-CAM on ``slices`` random slices of ``device``, in this process.

    Returns ``eager_s`` and ``compiled_s`` (best of ``repeats``), ``speedup``, ``first_call_s``
    (the call that compiles) and ``corr`` (correlation of the compiled maps with the eager ones).
    A last partial batch would compile a second shape, so only full batches are timed.
    """
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision={precision!r}: must be 'fp32' or 'bf16'")
    bf16 = precision == "bf16"
    dev = torch.device(device)
    stack = torch.rand(slices, 1, resolution, resolution, device=dev)
    stack = stack.contiguous(memory_format=torch.channels_last)
    stack = stack[: (slices // batch_size) * batch_size or batch_size]
    eager = _model(resolution, width, dev)
    ref = _cams(eager, stack, batch_size, bf16)
    t_eager = _best(repeats, eager, stack, batch_size, bf16)

    comp = _model(resolution, width, dev)
    torch._dynamo.reset()
    comp.features_at = torch.compile(comp.features_at, dynamic=False)
    comp.encode_from = torch.compile(comp.encode_from, dynamic=False)
    tic = time.perf_counter()
    got = _cams(comp, stack, batch_size, bf16)  # first call compiles
    t_first = time.perf_counter() - tic
    t_comp = _best(repeats, comp, stack, batch_size, bf16)
    corr = float(torch.corrcoef(torch.stack([ref.flatten(), got.flatten()]))[0, 1])
    return {"slices": len(stack), "eager_s": t_eager, "compiled_s": t_comp,
            "speedup": t_eager / t_comp, "first_call_s": t_first, "corr": corr}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--slices", type=int, default=138)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precisions", default="fp32,bf16",
                   help="comma list of fp32, bf16 (bf16 is emulated, and slow, on CPUs without "
                        "AMX / AVX-512-BF16)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    names = a.precisions.split(",")
    for name in names:
        if name not in ("fp32", "bf16"):
            p.error(f"--precisions: {name!r} is not fp32 or bf16")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 units: "
          f"{cpu_bf16_units() or 'none'}; {a.slices} slices at {a.resolution}², "
          f"width {a.width:g}, batch {a.batch_size}")
    rows = {}
    for name in names:
        row = compare(resolution=a.resolution, width=a.width, slices=a.slices,
                      batch_size=a.batch_size, precision=name, repeats=a.repeats,
                      device=a.device)
        rows[name] = row
        print(f"{name}: eager {row['eager_s']:.3f} s, compiled {row['compiled_s']:.3f} s "
              f"({row['speedup']:.2f}x) on {row['slices']} slices, first compiled call "
              f"{row['first_call_s']:.1f} s, map correlation {row['corr']:.5f}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"resolution": a.resolution, "width": a.width, "device": a.device,
                       "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
