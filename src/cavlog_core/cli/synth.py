"""``cavlog synth OUT``: write the built-in synthetic BraTS-like FLAIR dataset."""

from __future__ import annotations

import argparse
import sys
import time

from tqdm import tqdm

from ..config import LESION_PRESETS, SynthConfig
from ..errors import CavlogError

_DEFAULT = SynthConfig()


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``cavlog synth`` (its options and help) on ``subparsers``."""
    p = subparsers.add_parser(
        "synth",
        help="write a synthetic BraTS-like FLAIR dataset (phantom brains with gliomas or MS "
             "lesions)",
        description="Write OUT/SYN_XXXX/SYN_XXXX_{flair,seg,brainmask}.nii.gz (BraTS 2019 naming, "
                    "1 mm RAS) and OUT/dataset.json. Deterministic: subject k depends only on "
                    "(--seed, k) and --shape.",
    )
    p.add_argument("out", metavar="OUT", help="output folder (created)")
    # Values are parsed in run() so a bad one gives a single error line (not argparse's usage).
    p.add_argument("--subjects", metavar="N", default=str(_DEFAULT.subjects),
                   help=f"number of subjects (default {_DEFAULT.subjects})")
    p.add_argument("--seed", metavar="S", default=str(_DEFAULT.seed),
                   help=f"dataset seed, >= 0 (default {_DEFAULT.seed})")
    p.add_argument("--shape", metavar="X,Y,Z", default=",".join(map(str, _DEFAULT.shape)),
                   help="volume shape in voxels, each >= 16 (default "
                        f"{','.join(map(str, _DEFAULT.shape))}; e.g. 64,64,32 for a quick test)")
    p.add_argument("--healthy-fraction", metavar="F", default=str(_DEFAULT.healthy_fraction),
                   help="fraction of subjects without lesions, in [0, 1] (default "
                        f"{_DEFAULT.healthy_fraction}; with 0 < F < 1 and N >= 2 at least one of "
                        "each kind)")
    p.add_argument("--lesions", choices=LESION_PRESETS, default=_DEFAULT.lesions,
                   help="disease of the lesioned subjects: glioma (one BraTS-sized tumour, labels "
                        "1/2/4, 8-20 %% of the brain on the central slices) or ms (many small "
                        f"white-matter lesions, label 1, 0.5-3 %%); default {_DEFAULT.lesions}")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _int(name: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CavlogError(f"--{name} {text!r}: expected an integer") from None


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.split(",")
    try:
        values = tuple(int(v) for v in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CavlogError(f"--shape {text!r}: expected three comma-separated integers X,Y,Z "
                          "(e.g. 240,240,155)")
    return values  # type: ignore[return-value]


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CavlogError(f"--healthy-fraction {text!r}: expected a number in [0, 1]") from None


def run(args: argparse.Namespace) -> int:
    """Run ``cavlog synth`` with parsed ``args``; return the exit status."""
    from ..synth import write_synthetic_dataset

    seed = _int("seed", args.seed)
    if seed < 0:
        raise CavlogError(f"--seed {seed}: must be >= 0")
    cfg = SynthConfig(subjects=_int("subjects", args.subjects), seed=seed,
                      shape=_shape(args.shape), healthy_fraction=_fraction(args.healthy_fraction),
                      lesions=args.lesions)
    t0 = time.perf_counter()
    events = write_synthetic_dataset(args.out, cfg)
    bar = tqdm(total=cfg.subjects, unit="subject", desc="synth", disable=args.quiet,
               file=sys.stderr)
    try:
        while True:
            try:
                event = next(events)
            except StopIteration as stop:
                result = stop.value
                break
            bar.set_postfix_str(f"{event.case_id} {'healthy' if event.healthy else 'lesion'}")
            bar.update(1)
    finally:
        bar.close()
    n_healthy = sum(result.healthy)
    shape = "x".join(map(str, cfg.shape))
    print(f"wrote {len(result.case_ids)} subjects ({n_healthy} healthy, "
          f"{len(result.case_ids) - n_healthy} with {cfg.lesions} lesions), shape {shape}, "
          f"to {result.root} "
          f"in {time.perf_counter() - t0:.1f} s; metadata: {result.metadata_path}")
    return 0
