"""Training loop, checkpoints and DDP plumbing shared by every trainable method."""

from ..checkpoint import LoadedCheckpoint, load_checkpoint, read_checkpoint, save_checkpoint
from .events import FitResult, TrainEvent
from .fit import finetune_config, fit, run_fit

__all__ = [
    "FitResult",
    "LoadedCheckpoint",
    "TrainEvent",
    "finetune_config",
    "fit",
    "load_checkpoint",
    "read_checkpoint",
    "run_fit",
    "save_checkpoint",
]
