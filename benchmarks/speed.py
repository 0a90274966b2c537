"""Speed figures of inference and training, each next to its baseline measured in the same run.

Usage::

    .venv/bin/python benchmarks/speed.py [--json OUT.json] [--threads N] [--quick] [--gpu-only]

CPU (any machine): one synthetic 240x240x155 volume from an in-memory ``Case`` to the anomaly
volume (``predict_volume``) at 224², width 1 (random weights: speed does not depend on them) and
with the demo weights (128², width 0.25), fp32 against bf16; which oneDNN convolution kernel the
bf16 path ran (from oneDNN's verbose log); the Grad-CAM at 224², width 1, eager against
``torch.compile`` (``bench_compile.compare``, fp32; the one-off compile time is reported too); and
fine-tuning throughput of the demo model (iterations per second, and the projected time of the
GUI's 300-iteration fine-tune); the folder mode (``cavlog predict`` on 20 volumes against an
in-turn loop). CUDA figures are added when a GPU is present (``--gpu-only``: those alone): the
same volume, eager fp32 against bf16 (with slices/s), ``fit()`` training throughput at 224²,
width 1, batch 32 with the logs read every ``log_every`` iterations against every iteration, and
the compiled Grad-CAM against eager in bf16. Every figure is printed as ``new / baseline`` with
both absolute values, and written to ``--json``;
``benchmarks/speed_table.py OUT.json --readme README.md`` turns that file into README's table.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch
from bench_compile import compare  # sibling scripts: benchmarks/ is sys.path[0]
from bench_inference import random_checkpoint

from cavlog_core._progress import drain
from cavlog_core.checkpoint import LoadedCheckpoint, load_checkpoint
from cavlog_core.data.io import case_from_arrays
from cavlog_core.device import cpu_bf16_units
from cavlog_core.inference.predict import predict_volume
from cavlog_core.synth import generate_subject

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "src" / "napari_cavlog" / "weights" / "demo.pt"


def volume_seconds(loaded: LoadedCheckpoint, case: Any, *, precision: str, device: str,
                   repeats: int, batch_size: int = 32) -> float:
    """Best wall time of ``predict_volume`` over ``repeats`` runs (after one warm-up)."""
    drain(predict_volume(loaded, case, device=device, precision=precision,
                         batch_size=batch_size))
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        tic = time.perf_counter()
        drain(predict_volume(loaded, case, device=device, precision=precision,
                             batch_size=batch_size))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - tic)
    return best


def cli_folder_seconds(checkpoint: Path, folder: Path, out: Path) -> float:
    """``cavlog predict CHECKPOINT FOLDER --out OUT`` in this process (its output discarded)."""
    import io

    from cavlog_core.cli import main as cli_main

    tic = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main(["predict", str(checkpoint), str(folder), "--out", str(out),
                         "--device", "cpu", "--precision", "auto"])
    if code != 0:
        raise RuntimeError(f"cavlog predict exited with {code}")
    return time.perf_counter() - tic


def folder_seconds(loaded: LoadedCheckpoint, folder: Path, out: Path, *, device: str,
                   precision: str) -> float:
    """Time a plain loop over a folder: read, infer, write map + mask + lesion CSV, in turn."""
    from cavlog_core.data.io import find_cases, iter_loaded_cases, save_like
    from cavlog_core.lesions import find_lesions, write_lesions_csv
    from cavlog_core.maps import mask_in_brain

    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    for case in iter_loaded_cases(find_cases(folder), prefetch=False):
        result = drain(predict_volume(loaded, case, device=device, precision=precision))
        mask = mask_in_brain(result.anomaly, case.brain_mask, 0.5)
        save_like(result.anomaly, case, out / f"{case.case_id}_anomaly.nii.gz")
        save_like(mask.astype(np.uint8), case, out / f"{case.case_id}_mask.nii.gz")
        write_lesions_csv(find_lesions(mask, affine=case.affine, scores=result.anomaly),
                          out / f"{case.case_id}_lesions.csv")
    return time.perf_counter() - tic


def onednn_kernel() -> str:
    """The implementation oneDNN reports for a bf16 convolution here (``jit_bf16:...``)."""
    conv = torch.nn.Conv2d(16, 16, 3, padding=1)
    x = torch.randn(8, 16, 32, 32)
    fd, path = tempfile.mkstemp()
    saved = os.dup(1)
    try:
        os.dup2(fd, 1)
        with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON), \
                torch.autocast("cpu", dtype=torch.bfloat16):
            conv(x)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(fd)
    text = Path(path).read_text(errors="replace")
    os.unlink(path)
    for line in text.splitlines():
        if ",convolution," in line and "exec" in line:
            fields = line.split(",")
            impl = next((f for f in fields if re.match(r"^(brg|jit|gemm|ref)", f)), "?")
            return impl
    return "no oneDNN convolution reported"


def finetune_rate(iterations: int, device: str, *, cpu_bf16: bool,
                  channels_last: bool | None = None) -> float:
    """Iterations per second of fine-tuning the demo model on one synthetic healthy scan.

    ``channels_last`` forces the memory format (``None``: what training chooses, channels-last),
    to measure the previous NCHW path beside the current one.
    """
    from cavlog_core.training.fit import finetune_config, fit

    forced = None if channels_last is None else (lambda *_: channels_last)
    with _fit_module_with("_channels_last", forced):
        return _finetune_rate(iterations, device, cpu_bf16, finetune_config, fit)


def _fit_module_with(name: str, value: Any) -> contextlib.AbstractContextManager:
    """Context: ``cavlog_core.training.fit.<name>`` replaced by ``value`` (None: left as is)."""
    if value is None:
        return contextlib.nullcontext()
    fit_module = importlib.import_module("cavlog_core.training.fit")  # the package exports fit()
    return mock.patch.object(fit_module, name, value)


def _finetune_rate(iterations: int, device: str, cpu_bf16: bool, finetune_config: Any,
                   fit: Any) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        from cavlog_core.synth import write_subject

        write_subject(generate_subject(3, (240, 240, 155), healthy=True), Path(tmp) / "H",
                      "H")
        base = load_checkpoint(DEMO).config
        config = finetune_config(base, iterations=iterations, device=device,
                                 checkpoint_every=iterations, cpu_bf16=cpu_bf16)
        times: list[float] = []
        for event in fit(config, Path(tmp) / "H", out_dir=Path(tmp) / "run",
                         init_checkpoint=DEMO):
            if event.phase == "constrained":
                times.append(time.perf_counter())
        return (len(times) - 1) / (times[-1] - times[0])


def fit_images_per_s(*, device: str, resolution: int, width: float, iterations: int,
                     deferred: bool, slices: int = 512) -> float:
    """Images/s of :func:`fit` training the constrained method (the attention term on).

    Timed from the first iteration's event to the last one's, both of which read the logs (so
    the device has caught up): data preparation, start-up and validation are left out.
    ``deferred=False`` reads the logs after every iteration (the previous release on a GPU).
    """
    from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, TrainConfig
    from cavlog_core.data import SliceArrays
    from cavlog_core.training.fit import fit

    r = resolution
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:r, :r]
    brain = np.hypot(yy - r / 2, xx - r / 2) < 0.4 * r
    images = np.where(brain, g.uniform(0.3, 0.9, (slices, 1, r, r)), 0).astype(np.float16)
    data = SliceArrays(images, np.broadcast_to(brain, images.shape).copy(), None,
                       np.zeros(slices, np.int64), np.arange(slices), ("bench",))
    batch = 32
    config = RunConfig(preprocess=PreprocessConfig(resolution=r),
                       model=ModelConfig(resolution=r, width=width),
                       train=TrainConfig(iterations=iterations, warmup_iterations=0,
                                         batch_size=batch, device=device,
                                         checkpoint_every=iterations))
    every = None if deferred else (lambda _device: True)
    with _fit_module_with("_reads_every_iteration", every), tempfile.TemporaryDirectory() as tmp:
        times = [time.perf_counter() for e in fit(config, data, out_dir=Path(tmp) / "run",
                                                  val_data=data)
                 if e.phase == "constrained" and e.iteration in (1, iterations)]
    return (iterations - 1) * batch / (times[-1] - times[0])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="fewer fine-tune iterations")
    p.add_argument("--gpu-only", action="store_true",
                   help="only the CUDA figures (a lent GPU machine's minutes are few)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    subject = generate_subject(1, (240, 240, 155))
    case = case_from_arrays(subject.flair, seg=subject.seg, case_id="SYN_0001")
    out: dict[str, Any] = {
        "machine": {"cpu": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(), "bf16_units": list(cpu_bf16_units()),
                    "torch": torch.__version__},
        "figures": {},
    }

    def report(name: str, new: float, base: float, unit: str, what: str) -> None:
        out["figures"][name] = {"new": new, "baseline": base, "ratio": base / new,
                                "unit": unit, "what": what}
        print(f"{name:34s} {new:8.3f} {unit} vs {base:8.3f} {unit} -> {base / new:5.2f}x ({what})")

    models = {"224² width 1 (random)": random_checkpoint(224, 1.0, torch.device("cpu"))}
    if DEMO.is_file():
        models["128² width 0.25 (demo)"] = load_checkpoint(DEMO)
    if not args.gpu_only:
        cpu_figures(args, case, models, report, out["machine"])
    if torch.cuda.is_available():
        n_slices = int(np.count_nonzero(case.brain_mask.any(axis=(0, 1))))
        for label, loaded in models.items():
            fp32 = volume_seconds(loaded, case, precision="fp32", device="cuda",
                                  repeats=args.repeats)
            bf16 = volume_seconds(loaded, case, precision="bf16", device="cuda",
                                  repeats=args.repeats)
            report(f"cuda volume {label}", bf16, fp32, "s",
                   f"bf16 vs fp32 on the GPU; {n_slices / bf16:.0f} slices/s in bf16 "
                   f"({n_slices} brain slices, from an in-memory Case)")
            whole = volume_seconds(loaded, case, precision="bf16", device="cuda",
                                   repeats=args.repeats, batch_size=n_slices)
            report(f"cuda volume {label}, one pass", whole, bf16, "s",
                   f"the whole volume in one batch vs batches of 32, bf16; "
                   f"{n_slices / whole:.0f} slices/s")
        rates = {d: fit_images_per_s(device="cuda", resolution=224, width=1.0, iterations=60,
                                     deferred=d) for d in (False, True)}
        report("cuda fit() 224² width 1, batch 32", 1 / rates[True], 1 / rates[False],
               "s/image", f"logs read every log_every iterations vs every iteration; "
               f"{rates[True]:.0f} against {rates[False]:.0f} images/s, bf16, fused Adam, "
               "data on the GPU")
        row = compare(resolution=224, width=1.0, slices=1024, precision="bf16",
                      repeats=args.repeats, device="cuda")
        report("cuda Grad-CAM 224² compiled", row["compiled_s"], row["eager_s"], "s",
               f"torch.compile vs eager, bf16, {row['slices']} slices; first call (compiles) "
               f"{row['first_call_s']:.1f} s, map correlation {row['corr']:.5f}")
    elif args.gpu_only:
        print("--gpu-only: no CUDA device here, nothing measured")
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def cpu_figures(args: argparse.Namespace, case: Any, models: dict[str, LoadedCheckpoint],
                report: Any, machine: dict[str, Any]) -> None:
    """Measure the CPU rows: volume fp32 vs bf16, folder mode, compiled Grad-CAM, fine-tune."""
    for label, loaded in models.items():
        fp32 = volume_seconds(loaded, case, precision="fp32", device="cpu", repeats=args.repeats)
        bf16 = volume_seconds(loaded, case, precision="bf16", device="cpu", repeats=args.repeats)
        report(f"cpu volume {label}", bf16, fp32, "s", "bf16 vs fp32, one 240x240x155 volume")
        if loaded.config.model.map_flips > 1:
            flips = loaded.config.model.map_flips
            one = volume_seconds(loaded.with_map_flips(1), case, precision="bf16",
                                 device="cpu", repeats=args.repeats)
            report(f"cpu volume {label}, {flips} flips", bf16, one, "s",
                   f"bf16, the mean over {flips} flips (its map) vs one pass (the previous "
                   "release's map)")
    if DEMO.is_file():
        from cavlog_core.synth import write_subject

        n = 6 if args.quick else 20
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "cases"
            for k in range(n):
                write_subject(generate_subject(100 + k, (240, 240, 155)), folder / f"S{k:02d}",
                              f"S{k:02d}")
            demo = load_checkpoint(DEMO)
            in_turn = folder_seconds(demo, folder, Path(tmp) / "in_turn", device="cpu",
                                     precision="auto")
            cli = cli_folder_seconds(DEMO, folder, Path(tmp) / "cli")
        report(f"cpu folder of {n} volumes (demo)", cli, in_turn, "s",
               f"cavlog predict (next scan decoded and last one written on threads) vs read, "
               f"infer, write in turn; {n / cli:.2f} volumes/s with decode and writing")
    row = compare(resolution=224, width=1.0, slices=64 if args.quick else 128, precision="fp32",
                  repeats=args.repeats)
    report("cpu Grad-CAM 224² compiled", row["compiled_s"], row["eager_s"], "s",
           f"torch.compile vs eager, fp32, {row['slices']} slices; first call (compiles) "
           f"{row['first_call_s']:.1f} s, map correlation {row['corr']:.5f}")
    kernel = onednn_kernel()
    machine["onednn_bf16_conv"] = kernel
    print(f"oneDNN bf16 convolution kernel: {kernel}")
    if DEMO.is_file():
        n = 12 if args.quick else 40
        rates = {(bf16, nhwc): finetune_rate(n, "cpu", cpu_bf16=bf16, channels_last=nhwc)
                 for bf16 in (False, True) for nhwc in (False, True)}
        report("cpu fine-tune demo, 300 it", 300 / rates[True, True], 300 / rates[False, False],
               "s", f"bf16 NHWC (the widget's) vs fp32 NCHW (before bf16), projected from {n} "
               "iterations (the GUI's fine-tune)")
        for bf16 in (False, True):
            label = "bf16" if bf16 else "fp32"
            report(f"cpu fine-tune {label} channels-last", 300 / rates[bf16, True],
                   300 / rates[bf16, False], "s",
                   f"{label} NHWC (current) vs {label} NCHW (previous release), 300 iterations")


if __name__ == "__main__":
    raise SystemExit(main())
