"""Time and memory of ``pixel_metrics`` on 100 M pooled pixels (the streaming, binned path).

Usage::

    .venv/bin/python benchmarks/bench_metrics.py [--pixels 100000000] [--check-exact 4000000]

Budget (issue 3): 100 M pooled pixels in <= 10 s and <= 2 GB of extra memory on 2 CPU cores.
The inputs (float32 scores shaped like normalised anomaly maps, bool labels, a bool brain mask of
contiguous runs) are built first and not counted. ``--check-exact N`` also compares the binned
and exact paths on the first N pixels and prints the largest difference and the reported bound.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from cavlog_core.metrics import pixel_metrics

KEYS = ("auroc", "auprc", "average_precision", "dice_best", "iou_best")


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map-like scores: lesions score higher, 10 % exact zeros; mask = runs of ~200 pixels."""
    rng = np.random.default_rng(seed)
    scores = np.empty(n, dtype=np.float32)
    labels = np.empty(n, dtype=bool)
    mask = np.empty(n, dtype=bool)
    step = 1 << 24
    for i in range(0, n, step):
        j = min(n, i + step)
        m = j - i
        lab = rng.random(m, dtype=np.float32) < 0.03
        s = rng.random(m, dtype=np.float32) ** 2 * 0.7 + lab * 0.3 * rng.random(m, dtype=np.float32)
        s[rng.random(m, dtype=np.float32) < 0.1] = 0.0
        scores[i:j], labels[i:j] = s, lab
        # Brain-like mask: alternating runs (coherent, as slices are), ~80 % inside.
        runs = np.repeat(rng.random(m // 200 + 1) < 0.8, 200)[:m]
        mask[i:j] = runs
    return scores, labels, mask


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pixels", type=int, default=100_000_000)
    p.add_argument("--check-exact", type=int, default=0)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    scores, labels, mask = synthetic(args.pixels)
    print(f"built {args.pixels:,} pixels in {time.perf_counter() - t0:.1f} s")

    for name, region in (("all pixels", None), ("inside mask", mask)):
        tracemalloc.start()
        t0, c0 = time.perf_counter(), time.process_time()
        got = pixel_metrics(scores, labels, region)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(f"{name}: {got['n_pixels']:,} pooled pixels in {wall:.2f} s ({cpu:.2f} CPU-s), "
              f"peak extra memory {peak / 2**20:.0f} MiB, exact={got['exact']}, "
              f"error bound {got['error_bound']:.2e}")
        print("  " + ", ".join(f"{k}={got[k]:.5f}" for k in KEYS))

    if args.check_exact:
        n = args.check_exact
        t0 = time.perf_counter()
        exact = pixel_metrics(scores[:n], labels[:n], exact=True)
        t_exact = time.perf_counter() - t0
        binned = pixel_metrics(scores[:n], labels[:n], exact=False)
        diff = max(abs(exact[k] - binned[k]) for k in KEYS)
        print(f"check on {n:,} pixels: exact path {t_exact:.2f} s; max |binned - exact| = "
              f"{diff:.2e} <= reported bound {binned['error_bound']:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
