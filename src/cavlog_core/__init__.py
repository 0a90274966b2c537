"""cavlog_core: constrained unsupervised anomaly segmentation of brain lesions in FLAIR MRI.

Silva-Rodríguez, Naranjo & Dolz, "Looking at the whole picture: constrained unsupervised anomaly
segmentation", BMVC 2021. This package never imports napari or Qt.

The public names below are imported lazily, so ``import cavlog_core`` stays cheap (no torch) until
one of them is used.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ModelConfig, PreprocessConfig, RunConfig, SynthConfig, TrainConfig
from .errors import CavlogError, InputFileError

__version__ = "0.1.0"

_LAZY = {
    "ResNetVAE": "cavlog_core.models.resnet_vae",
    "extended_log_barrier": "cavlog_core.models.barrier",
    "fit": "cavlog_core.training.fit",
    "run_fit": "cavlog_core.training.fit",
    "FitResult": "cavlog_core.training.events",
    "TrainEvent": "cavlog_core.training.events",
    "load_checkpoint": "cavlog_core.checkpoint",
    "predict_volume": "cavlog_core.inference.predict",
    "predict": "cavlog_core.inference.predict",
    "pixel_metrics": "cavlog_core.metrics",
    "binary_scores": "cavlog_core.metrics",
    "evaluate": "cavlog_core.evaluate",
    "load_case": "cavlog_core.data.io",
    "find_cases": "cavlog_core.data.io",
    "save_like": "cavlog_core.data.io",
    "Case": "cavlog_core.data.io",
    "CaseFiles": "cavlog_core.data.io",
    "get_method": "cavlog_core.methods",
    "list_methods": "cavlog_core.methods",
    "drain": "cavlog_core._progress",
    "relay": "cavlog_core._progress",
    "Progress": "cavlog_core._progress",
    "run_evaluate": "cavlog_core.evaluate",
}

__all__ = [
    "CavlogError",
    "InputFileError",
    "ModelConfig",
    "PreprocessConfig",
    "RunConfig",
    "SynthConfig",
    "TrainConfig",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cavlog_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

