"""cavlog_core: constrained unsupervised anomaly segmentation of brain lesions in FLAIR MRI.

Silva-Rodríguez, Naranjo & Dolz, "Looking at the whole picture: constrained unsupervised anomaly
segmentation", BMVC 2021. This package never imports napari or Qt.
"""

from .config import ModelConfig, PreprocessConfig, RunConfig, SynthConfig, TrainConfig
from .errors import CavlogError, InputFileError

__version__ = "0.1.0"

__all__ = [
    "CavlogError",
    "InputFileError",
    "ModelConfig",
    "PreprocessConfig",
    "RunConfig",
    "SynthConfig",
    "TrainConfig",
]
