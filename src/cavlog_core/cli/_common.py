"""Argument helpers shared by subcommands, built from the config dataclasses' defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PreprocessConfig
from ..errors import CavlogError

PRE = PreprocessConfig()


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
