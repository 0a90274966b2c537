"""Argument helpers shared by subcommands, built from the config dataclasses' defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PreprocessConfig, TrainConfig
from ..errors import CavlogError

PRE = PreprocessConfig()
TRN = TrainConfig()


def existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def float_tuple(n: int):
    """argparse type: ``"a,b,c"`` -> tuple of ``n`` floats."""

    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {n} comma-separated numbers"
            ) from None
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {n} comma-separated numbers")
        return values

    return parse


def int_tuple(n: int):
    """argparse type: ``"a,b,c"`` -> tuple of ``n`` ints."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: expected {n} comma-separated integers"
            ) from None
        if len(values) != n:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {n} comma-separated integers")
        return values

    return parse


def add_slices_option(p: argparse.ArgumentParser, default: str = PRE.slices) -> None:
    p.add_argument(
        "--slices",
        default=default,
        help="'central:N' (N central axial slices of the brain) or 'brain' (every slice "
        f"with enough brain); default {default}",
    )


def require(cond: bool, message: str) -> None:
    if not cond:
        raise CavlogError(message)


def add_device_option(p, default: str = TRN.device) -> None:
    """``--device`` (any :func:`~cavlog_core.device.resolve_device` spec)."""
    p.add_argument("--device", default=default,
                   help=f"auto, cpu, cuda, cuda:N or mps; default {default}")


def add_inference_options(p) -> None:
    """``--device`` and ``--batch-size`` (slices per network pass) of predict and evaluate."""
    add_device_option(p)
    p.add_argument("--batch-size", type=int, default=TRN.batch_size,
                   help=f"slices per network pass; default {TRN.batch_size}")
