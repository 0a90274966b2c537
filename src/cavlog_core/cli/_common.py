"""Argument helpers shared by subcommands, built from the config dataclasses' defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PRECISIONS, InferenceConfig, PreprocessConfig, TrainConfig
from ..errors import CavlogError

PRE = PreprocessConfig()
TRN = TrainConfig()
INF = InferenceConfig()


def existing_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or directory")
    return path


def float_tuple(n: int):
    """Argparse type: ``"a,b,c"`` -> tuple of ``n`` floats."""

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
    """Argparse type: ``"a,b,c"`` -> tuple of ``n`` ints."""

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


def add_slices_option(p: argparse._ActionsContainer, default: str = PRE.slices) -> None:
    p.add_argument(
        "--slices",
        default=default,
        help="'central:N' (N central axial slices of the brain) or 'brain' (every slice "
        f"with enough brain); default {default}",
    )


def require(cond: bool, message: str) -> None:
    if not cond:
        raise CavlogError(message)


def output_dir(path: Path, option: str = "--out") -> Path:
    """Check, before any heavy work, that ``path`` is or can become a writable folder.

    Nothing is created: the nearest existing folder must accept a new file.
    """
    import tempfile

    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CavlogError(f"{option} {path}: exists and is not a folder")
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CavlogError(f"{option} {path}: {probe} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        raise CavlogError(f"{option} {path}: cannot write in {probe} "
                          f"({err.strerror or err})") from None
    return path


def output_file(path: Path, option: str = "--out", *, force: bool = False) -> Path:
    """Check that ``path`` can be written.

    Its folder must be writable, it must not be a folder, and it is not overwritten unless
    ``force``.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise CavlogError(f"{option} {path}: is a folder; give a file name")
    if path.exists() and not force:
        raise CavlogError(f"{option} {path}: already exists; pass --force to overwrite it")
    output_dir(path.parent, option)
    return path


def add_device_option(p, default: str = TRN.device) -> None:
    """``--device`` (any :func:`~cavlog_core.device.resolve_device` spec)."""
    p.add_argument("--device", default=default,
                   help=f"auto, cpu, cuda, cuda:N or mps; default {default}")


def add_inference_options(p) -> None:
    """``--device``, ``--batch-size`` (slices per network pass) and ``--precision``."""
    add_device_option(p, INF.device)
    p.add_argument("--precision", choices=PRECISIONS, default=INF.precision,
                   help="compute precision of the maps; auto (default): bf16 on CUDA and on CPUs "
                        "with AMX / AVX-512-BF16 units, fp32 elsewhere")
    p.add_argument("--batch-size", type=int, default=INF.batch_size,
                   help=f"slices per network pass; default {INF.batch_size}")
