"""Helpers for the napari plugin tests: tiny checkpoints and small synthetic case folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Healthy percentiles stored in the tiny checkpoints (any increasing values in (0, 1) do).
TINY_THRESHOLDS = {"healthy_p85": 0.55, "healthy_p90": 0.6, "healthy_p95": 0.7,
                   "healthy_p98": 0.8, "healthy_p99": 0.85}


def make_tiny_checkpoint(path: Path, *, resolution: int = 64, width: float = 0.125,
                         seed: int = 0) -> Path:
    """A randomly initialised constrained ResNet-VAE checkpoint (fast on the CPU)."""
    import torch

    from cavlog_core.checkpoint import save_checkpoint
    from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig
    from cavlog_core.methods import get_method

    torch.manual_seed(seed)
    config = RunConfig(preprocess=PreprocessConfig(resolution=resolution),
                       model=ModelConfig(resolution=resolution, width=width))
    method = get_method("constrained")(config)
    modules = method.build()
    return save_checkpoint(path, method=method, modules=modules, thresholds=TINY_THRESHOLDS)


def write_synthetic_cases(root: Path, seeds: tuple[int, ...], *, shape=(64, 64, 40),
                          healthy: bool = False) -> list[Path]:
    """Synthetic subjects as BraTS-2019 case folders ``SYN_<seed>/SYN_<seed>_{flair,seg}``."""
    from cavlog_core.synth import generate_subject, write_subject

    folders = []
    for seed in seeds:
        subject = generate_subject(seed, shape, healthy=healthy)
        case_id = f"SYN_{seed:04d}"
        write_subject(subject, root / case_id, case_id)
        folders.append(root / case_id)
    return folders


def add_case(viewer, folder: Path):
    """Open a case folder through the plugin's reader; returns the new layers."""
    return viewer.open(str(folder), plugin="napari-cavlog")


def lesion_slice(gt: np.ndarray) -> int:
    """Display-order axial index with the largest lesion area."""
    return int(np.argmax((gt > 0).reshape(gt.shape[0], -1).sum(axis=1)))
