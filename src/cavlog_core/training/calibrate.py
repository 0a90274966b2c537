"""Healthy thresholds of a trained model, recomputed on other healthy scans (no training).

A threshold such as ``healthy:fpr1`` promises a voxel false-positive rate on healthy tissue;
that promise holds for scans like the ones it was computed on. :func:`calibrate` recomputes every
healthy threshold (``healthy_p85`` ... ``healthy_p99``, ``healthy_fpr0.5`` ... ``healthy_fpr5``)
and the healthy f_c share on the lesion-free slices of a folder, for instance a site's own
healthy scans, and writes a new checkpoint with the same weights. Fine-tuning
(:func:`~cavlog_core.training.fit.fit` from a checkpoint) does the same after training.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

from ..data import find_cases, iter_slice_arrays
from ..device import resolve_device
from ..errors import CavlogError
from .checkpoint import load_checkpoint, save_checkpoint
from .events import TrainEvent
from .fit import _as_slices, _validate

__all__ = ["CalibrationResult", "calibrate"]


@dataclass(frozen=True)
class CalibrationResult:
    """What :func:`calibrate` wrote.

    Attributes
    ----------
    checkpoint_path : Path
        The new checkpoint (same weights and configuration, new thresholds).
    thresholds : dict of str to float
        The recomputed healthy thresholds.
    previous : dict of str to float
        The checkpoint's thresholds before.
    slices : int
        Lesion-free brain slices they were computed on.
    healthy_fc_satisfied : float or None
        Share of those slices with f_c(a) <= 0 (methods with a constraint).
    """

    checkpoint_path: Path
    thresholds: dict[str, float]
    previous: dict[str, float]
    slices: int
    healthy_fc_satisfied: float | None


def calibrate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    out: str | Path,
    slices: str = "brain",
    device: str = "auto",
    batch_size: int = 32,
    cache_dir: str | Path | None = None,
) -> Generator[TrainEvent, None, CalibrationResult]:
    """Recompute a checkpoint's healthy thresholds on the lesion-free slices of ``data``.

    Parameters
    ----------
    checkpoint : path
        A trained checkpoint.
    data : path
        Folder of scans (a dataset root, a case folder or a NIfTI file); with a segmentation
        only its lesion-free slices are used.
    out : path
        New checkpoint file (written atomically; may not be ``checkpoint`` itself).
    slices : str
        ``"brain"`` (every brain slice, as fine-tuning) or ``"central:N"``.
    device, batch_size, cache_dir
        Where to run, slices per pass, slice cache.

    Yields
    ------
    TrainEvent
        ``prepare`` per scan, then ``validate`` per batch.

    Returns
    -------
    CalibrationResult
    """
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise CavlogError(f"{out}: the output must be a new file, not the checkpoint itself")
    loaded = load_checkpoint(checkpoint)
    dev = resolve_device(device)
    config = dataclasses.replace(
        loaded.config,
        preprocess=dataclasses.replace(loaded.config.preprocess, slices=slices),
        train=dataclasses.replace(loaded.config.train, batch_size=batch_size,
                                  device=str(dev)))
    cases = find_cases(data)
    gen = iter_slice_arrays(cases, config.preprocess, cache_dir=cache_dir, healthy_only=True)
    try:
        while True:
            prog = next(gen)
            yield TrainEvent(0, 0, 0, "prepare", {"calibration_cases_done": prog.done,
                                                  "calibration_cases_total": prog.total})
    except StopIteration as stop:
        arrays = stop.value
    except CavlogError as err:
        raise CavlogError(f"{data}: {err}") from None
    healthy = _as_slices(arrays, config.model.resolution, "calibration")
    modules = loaded.modules.to(dev)
    share, thresholds = yield from _validate(loaded.method, modules, healthy, config, dev,
                                             int(loaded.meta.get("total_iterations") or 0))
    if not thresholds:
        raise CavlogError(f"{data}: no lesion-free brain slice to calibrate on")
    extra = dict(loaded.meta.get("extra") or {})
    extra["calibrated_on"] = {"data": str(data), "slices": slices, "n_slices": len(healthy)}
    path = save_checkpoint(
        out, method=loaded.method, modules=modules.cpu(),
        iteration=int(loaded.meta.get("iteration") or 0),
        total_iterations=int(loaded.meta.get("total_iterations") or 0),
        thresholds=thresholds, healthy_fc_satisfied=share, extra=extra)
    return CalibrationResult(path, dict(thresholds), dict(loaded.thresholds), len(healthy), share)

