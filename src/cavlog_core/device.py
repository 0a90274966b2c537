"""Choosing the torch device.

``auto`` falls back to the CPU with a warning; explicit requests for a missing accelerator fail.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import torch

from .config import PRECISIONS
from .errors import CavlogError


def available_devices() -> list[str]:
    """Device names usable here, best first: every ``cuda:N``, then ``mps``, then ``cpu``."""
    names = (
        [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    )
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` into a :class:`torch.device`.

    ``auto`` picks CUDA, then MPS, then the CPU. Asking explicitly for an accelerator that is not
    present raises :class:`CavlogError` with a one-line message.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    spec = spec.strip().lower()
    if spec == "auto":
        best = available_devices()[0]
        return torch.device(best)
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CavlogError(
                f"--device {spec!r}: CUDA is not available on this machine (use 'auto' or 'cpu')"
            )
        dev = torch.device(spec)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise CavlogError(
                f"--device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are present"
            )
        return dev
    if spec == "mps":
        if "mps" not in available_devices():
            raise CavlogError(
                "--device 'mps': MPS is not available on this machine (use 'auto' or 'cpu')"
            )
        return torch.device("mps")
    raise CavlogError(f"--device {spec!r}: expected one of auto, cpu, cuda, cuda:N, mps")


#: CPU flags (``/proc/cpuinfo``) of units that run bf16 convolutions natively (oneDNN kernels).
_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.cache
def cpu_bf16_units() -> tuple[str, ...]:
    """Return the bf16 units this CPU reports, e.g. ``("amx_bf16", "avx512_bf16")``.

    Empty when there are none or it is not known (outside Linux). Read once per process.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in _BF16_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"fp32"`` or ``"bf16"``: what inference on ``device`` computes in.

    ``auto`` is bf16 on CUDA, and on a CPU with bf16 units (AMX or AVX-512-BF16, where oneDNN's
    bf16 convolutions are faster than fp32); fp32 elsewhere (MPS, other CPUs). An explicit
    ``bf16`` is honoured everywhere (slow without such units, but it works).
    """
    if precision not in PRECISIONS:
        raise CavlogError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda" or (device.type == "cpu" and cpu_bf16_units()):
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``precision="bf16"`` on CUDA or the CPU; otherwise nothing (fp32).

    The one autocast switch of inference and training; ``precision`` is already resolved
    (:func:`resolve_precision`).
    """
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


_cpu_notice_given = False


def warn_if_cpu_fallback(requested: str, device: torch.device) -> None:
    """Warn once per process when ``auto`` ended on the CPU, so a user expecting a GPU notices.

    A ``RuntimeWarning`` (the CLI and the scripts print warnings as one line, see
    :func:`cavlog_core.errors.one_line_warnings`); later fallbacks in the same process are silent.
    """
    global _cpu_notice_given
    if requested == "auto" and device.type == "cpu" and not _cpu_notice_given:
        _cpu_notice_given = True
        warnings.warn("no GPU found: running on the CPU", RuntimeWarning, stacklevel=2)
