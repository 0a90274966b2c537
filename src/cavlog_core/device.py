"""Choosing the torch device.

``auto`` falls back to the CPU with a warning; explicit requests for a missing accelerator fail.
"""

from __future__ import annotations

import warnings

import torch

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
