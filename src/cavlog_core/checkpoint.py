"""Checkpoints: one ``.pt`` file with weights, optimiser state, the full config and metadata.

Everything stored is a tensor or a plain Python value, so files load with
``torch.load(weights_only=True)`` and no pickled code ever runs. Files are written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._atomic import atomic_path
from .config import RunConfig
from .device import resolve_device
from .errors import CavlogError, InputFileError
from .methods import Method, get_method

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LoadedCheckpoint",
    "library_versions",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = "cavlog-checkpoint"
CHECKPOINT_VERSION = 1
#: Most parameters a checkpoint's model may have (the paper's model at 224²: 14.5 M); checked on
#: PyTorch's "meta" device before any weight is allocated.
MAX_PARAMETERS = 300_000_000


def library_versions() -> dict[str, str]:
    """Versions recorded in every checkpoint, for reproducibility."""
    from . import __version__

    return {
        "cavlog_core": str(__version__),
        "torch": str(torch.__version__),  # TorchVersion is not weights_only-safe; str is
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def _plain(value: Any) -> Any:
    """Tuples -> lists recursively, so the payload holds only weights_only-safe primitives."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_checkpoint(
    path: str | Path,
    *,
    method: Method,
    modules: nn.ModuleDict,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    iteration: int = 0,
    total_iterations: int = 0,
    thresholds: Mapping[str, float] | None = None,
    healthy_fc_satisfied: float | None = None,
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    Parameters
    ----------
    path : path
        Destination (``RUN_DIR/checkpoint.pt``).
    method, modules, optimizers
        The method (its config and name are stored), its modules (bare, not DDP-wrapped) and
        optimisers; ``optimizers=None`` stores weights only.
    iteration, total_iterations : int
        Progress, for ``--resume``.
    thresholds : mapping, optional
        Healthy thresholds ``{"healthy_p85": ...}``.
    healthy_fc_satisfied : float, optional
        Share of healthy validation slices with f_c(a) <= 0.
    rng : mapping, optional
        Random-generator states (tensors).
    extra : mapping, optional
        More metadata (primitives only).
    """
    config = method.config
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "method": method.name,
        "config": _plain(config.to_dict()),
        "preprocess": _plain(config.to_dict()["preprocess"]),
        "modules": {name: {k: v.detach().cpu() for k, v in m.state_dict().items()}
                    for name, m in modules.items()},
        "optimizers": {name: opt.state_dict() for name, opt in (optimizers or {}).items()},
        "iteration": int(iteration),
        "total_iterations": int(total_iterations),
        "thresholds": {str(k): float(v) for k, v in (thresholds or {}).items()},
        "healthy_fc_satisfied": (None if healthy_fc_satisfied is None
                                 else float(healthy_fc_satisfied)),
        "rng": dict(rng or {}),
        "versions": library_versions(),
        "extra": _plain(dict(extra or {})),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _load_problem(err: Exception) -> str:
    """One line explaining why ``torch.load(weights_only=True)`` refused a file."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    unsafe = next((ln for ln in lines if "Unsupported global" in ln), None)
    if unsafe is not None:
        detail = unsafe.split("Unsupported global:", 1)[1].split(" was not", 1)[0].strip()
        return (f"holds pickled Python objects ({detail}); refusing to load them "
                "(weights_only=True), this is not a cavlog checkpoint")
    if lines and lines[0].startswith("Weights only load failed"):
        # torch's text is a paragraph of advice; the reason is the line after "WeightsUnpickler".
        at = next((i for i, ln in enumerate(lines) if "WeightsUnpickler error" in ln), None)
        detail = lines[at].split("WeightsUnpickler error:", 1)[1].strip() if at is not None \
            else ""
        if not detail and at is not None and at + 1 < len(lines):
            detail = lines[at + 1]
        return (f"holds pickled data that torch's safe loader refuses ({detail or 'unknown'}); "
                "refusing to load it (weights_only=True), this is not a cavlog checkpoint")
    first = lines[0] if lines else type(err).__name__
    return f"not a readable PyTorch checkpoint ({first[:160]})"


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and validate the raw payload of a checkpoint (CPU tensors), safely.

    Raises :class:`InputFileError` naming the file when it is missing, corrupt, not a checkpoint
    or from an unsupported version.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives; say so plainly
        raise InputFileError(path, "not a readable PyTorch checkpoint (not a zip archive: "
                                   "corrupt, truncated or another file type)")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of foreign files
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise InputFileError(path, _load_problem(err)) from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise InputFileError(path, "not a cavlog checkpoint (written by something else)")
    version = payload.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise InputFileError(
            path, f"checkpoint version {version!r} is newer than this cavlog_core supports "
                  f"({CHECKPOINT_VERSION})"
        )
    missing = [k for k in ("method", "config", "modules") if k not in payload]
    if missing:
        raise InputFileError(path, f"checkpoint is incomplete (missing {', '.join(missing)})")
    _validate_payload(path, payload)
    return payload


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate_payload(path: Path, payload: Mapping[str, Any]) -> None:
    """Check the schema, sizes and finiteness of a payload, before anything is built from it."""
    config = payload["config"]
    if not isinstance(config, Mapping) or not all(
            isinstance(config.get(k, {}), Mapping) for k in ("preprocess", "model", "train")):
        raise InputFileError(path, f"checkpoint config is a {type(config).__name__}, not a "
                                   "mapping of preprocess / model / train settings")
    if not isinstance(payload["method"], str):
        raise InputFileError(path, "checkpoint method name is not a string")
    ref = config.get("preprocess", {}).get("histogram_reference")
    if ref is not None:
        raise InputFileError(path, f"the checkpoint names a histogram reference file ({ref!r}); "
                                   "paths stored in checkpoints are never opened")
    thresholds = payload.get("thresholds", {})
    if not isinstance(thresholds, Mapping):
        raise InputFileError(path, "checkpoint thresholds are not a mapping")
    for k, v in thresholds.items():
        if not _number(v) or not math.isfinite(v) or not 0 <= v <= 1:
            raise InputFileError(path, f"healthy threshold {k}={v!r}: must be a number in "
                                       "[0, 1] (the checkpoint is damaged)")
    share = payload.get("healthy_fc_satisfied")
    if share is not None and (not _number(share) or not math.isfinite(share)):
        raise InputFileError(path, f"healthy_fc_satisfied={share!r}: must be a number")
    modules = payload["modules"]
    if not isinstance(modules, Mapping) or not all(
            isinstance(m, Mapping) and all(isinstance(t, torch.Tensor) for t in m.values())
            for m in modules.values()):
        raise InputFileError(path, "checkpoint weights are not tensors by module")
    total = sum(t.numel() for m in modules.values() for t in m.values())
    if total > MAX_PARAMETERS:
        raise InputFileError(path, f"checkpoint holds {total:,} weights, more than the "
                                   f"{MAX_PARAMETERS:,} accepted")
    for name, m in modules.items():
        bad = next((k for k, t in m.items() if t.is_floating_point()
                    and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise InputFileError(path, f"weights of {name!r} hold NaN or Inf values (e.g. "
                                       f"{bad}); the model would give no usable map")
        weights = [t for k, t in m.items() if t.is_floating_point() and k.endswith("weight")]
        if weights and all(not bool(t.any()) for t in weights):
            raise InputFileError(path, f"every weight of {name!r} is zero; the model would give "
                                       "a constant map")


def _check_model_size(path: Path, method: Method) -> None:
    """Refuse a config whose model would be too large, without allocating it."""
    try:
        with torch.device("meta"):
            modules = method.build()
    except Exception:
        return
    n = sum(p.numel() for p in modules.parameters())
    if n > MAX_PARAMETERS:
        raise InputFileError(path, f"the checkpoint's config describes a model of {n:,} "
                                   f"parameters, more than the {MAX_PARAMETERS:,} accepted")


def _state_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs "
                     f"{tuple(own[k].shape)})")
    return ", ".join(parts)


def load_weights(path: str | Path, payload: Mapping[str, Any], modules: nn.ModuleDict) -> None:
    """Copy a payload's weights into ``modules``; other architecture -> :class:`InputFileError`."""
    stored = payload["modules"]
    if not isinstance(stored, Mapping) or set(stored) != set(modules.keys()):
        have = sorted(stored) if isinstance(stored, Mapping) else type(stored).__name__
        raise InputFileError(path, f"weights for modules {have}, expected {sorted(modules.keys())}")
    for name, module in modules.items():
        problem = _state_mismatch(module, stored[name])
        if problem:
            raise InputFileError(
                path, f"weights of another architecture for {name!r}: {problem}"
            )
        module.load_state_dict(stored[name])


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint ready for inference.

    Attributes
    ----------
    method : Method
        The method instance (``method.anomaly_maps(modules, images, brain)``).
    modules : nn.ModuleDict
        Its modules, in evaluation mode, on the requested device.
    config : RunConfig
        The full run configuration (preprocessing, model, training).
    thresholds : dict of str to float
        Healthy thresholds (``healthy_p85`` ... ``healthy_p99``).
    meta : dict
        ``method``, ``iteration``, ``total_iterations``, ``healthy_fc_satisfied``, ``versions``,
        ``preprocess``, ``path``, ``extra``.
    """

    method: Method
    modules: nn.ModuleDict
    config: RunConfig
    thresholds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> nn.Module:
        """The network used at inference (``modules["model"]``)."""
        return self.modules["model"]

    def with_map_flips(self, map_flips: int) -> LoadedCheckpoint:
        """Return this checkpoint making its maps with ``map_flips`` test-time flips.

        Same modules; the method and configuration get ``ModelConfig.map_flips``. The stored
        healthy thresholds were calibrated for the checkpoint's own flips: recalibrate
        (:func:`cavlog_core.calibrate.calibrate`) before thresholding another map.
        """
        model = dataclasses.replace(self.config.model, map_flips=map_flips)  # validated there
        method = type(self.method)(dataclasses.replace(self.config, model=model))
        return dataclasses.replace(self, method=method, config=method.config)


def config_from_payload(path: str | Path, payload: Mapping[str, Any]) -> RunConfig:
    """Return the :class:`RunConfig` of a payload (an invalid one: error naming the file)."""
    try:
        return RunConfig.from_dict(payload["config"])
    except (CavlogError, TypeError) as err:
        raise InputFileError(path, f"checkpoint holds an invalid config ({err})") from None


def load_checkpoint(path: str | Path, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint written by :func:`save_checkpoint` for inference.

    Parameters
    ----------
    path : path
        The ``.pt`` file.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"auto"`` ... (see :func:`cavlog_core.device.resolve_device`).

    Raises
    ------
    InputFileError
        Missing, corrupt or foreign file, invalid config, unknown method, or weights that do not
        fit the architecture described by the stored config; the message names the file.
    """
    path = Path(path)
    payload = read_checkpoint(path)
    config = config_from_payload(path, payload)
    try:
        method = get_method(str(payload["method"]))(config)  # also checks the method's options
    except CavlogError as err:
        raise InputFileError(path, str(err)) from None
    _check_model_size(path, method)
    modules = method.build()
    load_weights(path, payload, modules)
    dev = resolve_device(device)
    modules.to(dev).eval()
    meta = {
        "method": method.name,
        "iteration": int(payload.get("iteration", 0)),
        "total_iterations": int(payload.get("total_iterations", 0)),
        "healthy_fc_satisfied": payload.get("healthy_fc_satisfied"),
        "versions": dict(payload.get("versions", {})),
        "preprocess": dict(payload.get("preprocess", {})),
        "extra": dict(payload.get("extra", {})),
        "path": str(path),
    }
    thresholds = {str(k): float(v) for k, v in dict(payload.get("thresholds", {})).items()}
    return LoadedCheckpoint(method, modules, config, thresholds, meta)
