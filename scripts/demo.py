"""``make demo``: the whole method end to end on the built-in synthetic dataset.

1. ``cavlog synth --lesions glioma``: 40 synthetic BraTS-like subjects with BraTS-sized gliomas
   (reused when already there);
2. train the constrained Grad-CAM VAE on the lesion-free slices of the training split
   (a CPU-sized configuration; a GPU, when present, is used automatically);
3. evaluate on the held-out test split (the paper's 10 central axial slices), print the table;
4. write ``docs/demo.png`` (FLAIR, ground truth, anomaly map, mask) and ``docs/demo_pr.png``.

Run ``python scripts/demo.py --help`` for the knobs; the defaults fit in 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm import tqdm

from cavlog_core import ModelConfig, PreprocessConfig, RunConfig, SynthConfig, TrainConfig
from cavlog_core._progress import drain
from cavlog_core.checkpoint import load_checkpoint
from cavlog_core.config import LESION_PRESETS, MAP_FLIPS
from cavlog_core.data import find_cases, load_case, select_slices, split_cases
from cavlog_core.errors import one_line_warnings
from cavlog_core.evaluate import evaluate
from cavlog_core.inference.predict import predict
from cavlog_core.maps.thresholds import parse_threshold
from cavlog_core.synth import ANATOMY_VERSION, dataset_anatomy_version, write_synthetic_dataset
from cavlog_core.training.fit import fit

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT / "data" / "synth")
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "demo")
    p.add_argument("--subjects", type=int, default=40)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--iterations", type=int, default=600)
    # 100 constrained iterations: longer, the attention saturates and the map flattens
    # (constrained 1200 / 200 / 100 iterations: AUPRC 0.175 / 0.39 / 0.51; docs/benchmark.md).
    p.add_argument("--warmup-iterations", type=int, default=500)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0,
                   help="training seed (weights, batches, noise, and the patient split)")
    p.add_argument("--device", default="auto")
    p.add_argument("--cam-weights", default="gradient-running-bn",
                   help="attention variant (README, 'Results'); 'gradient' is the paper as written")
    p.add_argument("--map-flips", type=int, default=4, choices=MAP_FLIPS,
                   help="test-time flips of the map (README, 'Flip-averaged maps'); 1 is the "
                        "paper's single pass")
    p.add_argument("--lesions", default=SynthConfig().lesions, choices=LESION_PRESETS,
                   help="synthetic disease (default glioma)")
    p.add_argument("--docs", type=Path, default=ROOT / "docs")
    return p.parse_args()


def synthesise(data: Path, subjects: int, lesions: str) -> None:
    meta = data / "dataset.json"
    if meta.is_file():
        old = json.loads(meta.read_text())
        if len(old["cases"]) == subjects and old.get("lesions", "legacy") == lesions \
                and dataset_anatomy_version(old) == ANATOMY_VERSION:
            print(f"[1/4] synthetic dataset: reusing {data}")
            return
        shutil.rmtree(data)  # another preset, size or anatomy: regenerate rather than mix
    print(f"[1/4] synthetic dataset: {subjects} subjects with {lesions} lesions -> {data}")
    with tqdm(total=subjects, unit="subject") as bar:
        drain(write_synthetic_dataset(data, SynthConfig(subjects=subjects, seed=0,
                                                        lesions=lesions)),
              lambda _: bar.update(1))


def train(args: argparse.Namespace) -> Path:
    config = RunConfig(
        preprocess=PreprocessConfig(resolution=args.resolution, slices="brain"),
        model=ModelConfig(resolution=args.resolution, width=args.width,
                          cam_weights=args.cam_weights, map_flips=args.map_flips),
        train=TrainConfig(iterations=args.iterations, warmup_iterations=args.warmup_iterations,
                          lr=args.lr, device=args.device, split_fractions=(0.7, 0.1, 0.2),
                          checkpoint_every=500, seed=args.seed),
    )
    if args.run.exists():
        shutil.rmtree(args.run)
    print(f"[2/4] training the constrained VAE ({args.resolution}², width {args.width}, "
          f"cam_weights {args.cam_weights}, map flips {args.map_flips}, {args.iterations} "
          f"iterations, device {args.device})")
    bars: dict[str, tqdm] = {}

    def show(event) -> None:
        # Slices are prepared (read, normalised, resized, cached) before the first iteration:
        # one bar for that stage, and the iteration bar starts with the first iteration so its
        # rate and ETA are the training's own.
        if event.phase == "prepare":
            done = next((v for k, v in event.losses.items() if k.endswith("_done")), 0)
            total = next((v for k, v in event.losses.items() if k.endswith("_total")), 0)
            what = next((k.split("_")[0] for k in event.losses), "train")
            bar = bars.get(what)
            if bar is None:
                bar = bars[what] = tqdm(total=int(total), unit="scan",
                                        desc=f"      preparing {what} slices")
            bar.n = int(done)
            bar.refresh()
        elif event.phase in ("warmup", "constrained"):
            for key in [k for k in bars if k != "it"]:
                bars.pop(key).close()
            bar = bars.get("it")
            if bar is None:
                bar = bars["it"] = tqdm(total=args.iterations, unit="it", desc="      training",
                                        initial=event.iteration - 1)
            bar.n = event.iteration
            bar.set_postfix(loss=f"{event.losses.get('loss', float('nan')):.4f}",
                            mean_fc=f"{event.mean_fc:+.3f}", phase=event.phase, refresh=False)
            bar.refresh()

    result = drain(fit(config, args.data, out_dir=args.run), show)
    for bar in bars.values():
        bar.close()
    print(f"      checkpoint {result.checkpoint_path}; healthy validation slices with f_c(a) <= 0: "
          f"{result.healthy_fc_satisfied:.1%}")
    return result.checkpoint_path


def figure(ckpt_path: Path, args: argparse.Namespace, report) -> None:
    loaded = load_checkpoint(ckpt_path)
    files = {c.case_id: c for c in find_cases(args.data)}
    test_ids = split_cases(sorted(files), loaded.config.train.split_fractions,
                           seed=loaded.config.train.seed)["test"]
    case_id = next(c for c in report.cases if c in test_ids)
    case = load_case(files[case_id])
    result = predict(loaded, case, device=args.device)
    thr, label = parse_threshold("healthy", loaded.thresholds)
    mask = result.anomaly >= thr
    lesion_per_z = (case.seg > 0).sum(axis=(0, 1))
    z_all = select_slices(case.brain_mask, "central:10")
    z_show = z_all[np.linspace(0, len(z_all) - 1, 4).round().astype(int)]
    z_show = [int(z) for z in z_show if lesion_per_z[z] > 0] or [int(z) for z in z_show]

    def disp(a):  # canonical (X, Y) -> anterior up, patient's right on the left of the screen
        return np.flipud(a.T)

    cols = ("FLAIR", "ground truth", "anomaly map", f"mask ({label}, t={thr:.2f})")
    fig, axes = plt.subplots(len(z_show), 4, figsize=(10, 2.6 * len(z_show)), squeeze=False)
    for row, z in enumerate(z_show):
        flair = disp(case.flair[:, :, z])
        lo, hi = np.percentile(case.flair[case.brain_mask], [1, 99.5])
        panels = (None, case.seg[:, :, z] > 0, result.anomaly[:, :, z], mask[:, :, z])
        for col, extra in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(flair, cmap="gray", vmin=lo, vmax=hi)
            if col == 1:
                ax.contour(disp(extra.astype(float)), levels=[0.5], colors="lime", linewidths=1)
            elif col == 2:
                ax.imshow(disp(extra), cmap="inferno", vmin=0, vmax=1, alpha=0.6)
            elif col == 3:
                ax.imshow(np.ma.masked_where(~disp(extra), disp(extra)), cmap="autumn", alpha=0.7)
                ax.contour(disp((case.seg[:, :, z] > 0).astype(float)), levels=[0.5],
                           colors="lime", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(cols[col], fontsize=9)
        axes[row, 0].set_ylabel(f"{case_id} z={z}", fontsize=8)
    fig.suptitle(f"cavlog demo — constrained Grad-CAM VAE on a held-out synthetic case "
                 f"(AUROC {report.pixel['auroc']:.3f} on the test split)", fontsize=10)
    fig.tight_layout()
    args.docs.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.docs / "demo.png", dpi=110)
    plt.close(fig)

    recall, precision, _ = report.pr_curve
    op = report.operating_point
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(recall, precision, color="C0", label=f"AUPRC {report.pixel['auprc']:.3f}")
    for i, (name, s) in enumerate(report.strategies.items()):
        if name in ("fixed_0.5", "healthy_p95"):
            ax.scatter([s["recall"]], [s["precision"]], color=f"C{i + 1}", zorder=3,
                       label=f"{name} (Dice {s['dice']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Pixel PR curve, test split (best Dice {op['dice_best']:.3f}, oracle)",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(args.docs / "demo_pr.png", dpi=110)
    plt.close(fig)
    print(f"      wrote {args.docs / 'demo.png'} and {args.docs / 'demo_pr.png'}")


def main() -> int:
    one_line_warnings("demo")
    args = parse_args()
    t0 = time.perf_counter()
    synthesise(args.data, args.subjects, args.lesions)
    ckpt = train(args)
    print("[3/4] evaluating on the test split (central:10 slices, inside the brain)")
    report = drain(evaluate(ckpt, args.data, split="test", slices="central:10",
                            device=args.device))
    report.to_json(args.run / "report.json")
    print(report.to_markdown())
    print("[4/4] figures")
    figure(ckpt, args, report)
    print(f"done in {time.perf_counter() - t0:.0f} s; report: {args.run / 'report.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
