"""Healthy thresholds of a trained model, recomputed on other healthy scans (no training).

A threshold such as ``healthy:fpr1`` promises a voxel false-positive rate on healthy tissue;
that promise holds for scans like the ones it was computed on. :func:`calibrate` recomputes every
healthy threshold (``healthy_p85`` ... ``healthy_p99``, ``healthy_fpr0.5`` ... ``healthy_fpr5``)
and the healthy f_c share on the lesion-free slices of a folder, for instance a site's own
healthy scans, and writes a new checkpoint with the same weights. Fine-tuning
(:func:`~cavlog_core.training.fit.fit` from a checkpoint) does the same after training.

It also sets the minimum lesion volume from the same scans: each volume is segmented at
``healthy_fpr5`` (the plugin's starting threshold), and the 95th percentile of the volumes of the
3-D components found on lesion-free slices becomes ``extra["min_lesion_ml"]``, the default of
``cavlog predict --min-lesion-ml`` and of the plugin's lesion table: 95 % of the spurious
detections on healthy tissue are smaller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._progress import drain, relay
from .checkpoint import load_checkpoint, save_checkpoint
from .config import InferenceConfig
from .data import find_cases, iter_loaded_cases, iter_slice_arrays, lesion_free_slices
from .device import resolve_device
from .errors import CavlogError
from .inference.predict import predict_volume
from .lesions import MIN_LESION_KEY, find_lesions, healthy_component_volume
from .maps.thresholds import mask_in_brain
from .training.events import TrainEvent, prepare_event
from .training.fit import _as_slices, _validate

_INF = InferenceConfig()  # the defaults of every inference option

__all__ = ["CalibrationResult", "calibrate"]

FPR5 = "healthy_fpr5"


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
    min_lesion_ml : float or None
        The healthy-data minimum lesion volume (None without an FPR 5 % threshold).
    map_flips : int
        The test-time flips of the map the thresholds are for (``ModelConfig.map_flips``).
    """

    checkpoint_path: Path
    thresholds: dict[str, float]
    previous: dict[str, float]
    slices: int
    healthy_fc_satisfied: float | None
    min_lesion_ml: float | None = None
    map_flips: int = 1


def calibrate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    out: str | Path,
    slices: str = "brain",
    device: str = "auto",
    batch_size: int = _INF.batch_size,
    cache_dir: str | Path | None = None,
    map_flips: int | None = None,
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
    map_flips : {1, 2, 4}, optional
        New test-time flips of the map (``ModelConfig.map_flips``), written to the new
        checkpoint with thresholds calibrated for them; default: the checkpoint's.

    Yields
    ------
    TrainEvent
        ``prepare`` per scan, ``validate`` per batch, then ``prepare`` per scan again
        (``lesion_cases_done``) while the minimum lesion volume is measured.

    Returns
    -------
    CalibrationResult
    """
    out = Path(out)
    if out.resolve() == Path(checkpoint).resolve():
        raise CavlogError(f"{out}: the output must be a new file, not the checkpoint itself")
    loaded = load_checkpoint(checkpoint)
    if map_flips is not None and map_flips != loaded.config.model.map_flips:
        loaded = loaded.with_map_flips(map_flips)
    dev = resolve_device(device)
    config = dataclasses.replace(
        loaded.config,
        preprocess=dataclasses.replace(loaded.config.preprocess, slices=slices),
        train=dataclasses.replace(loaded.config.train, batch_size=batch_size,
                                  device=str(dev)))
    cases = find_cases(data)
    gen = iter_slice_arrays(cases, config.preprocess, cache_dir=cache_dir, healthy_only=True)
    try:
        arrays = yield from relay(gen, lambda p: prepare_event("calibration", p.done, p.total))
    except CavlogError as err:
        raise CavlogError(f"{data}: {err}") from None
    healthy = _as_slices(arrays, config.model.resolution, "calibration")
    modules = loaded.modules.to(dev)
    share, thresholds = yield from _validate(loaded.method, modules, healthy, config, dev,
                                             int(loaded.meta.get("total_iterations") or 0))
    if not thresholds:
        raise CavlogError(f"{data}: no lesion-free brain slice to calibrate on")
    min_ml = None
    if FPR5 in thresholds:
        min_ml = yield from _min_lesion_volume(loaded, cases, thresholds[FPR5], dev, batch_size)
    extra = dict(loaded.meta.get("extra") or {})
    extra["calibrated_on"] = {"data": str(data), "slices": slices, "n_slices": len(healthy)}
    if min_ml is not None:
        extra[MIN_LESION_KEY] = min_ml
    path = save_checkpoint(
        out, method=loaded.method, modules=modules.cpu(),
        iteration=int(loaded.meta.get("iteration") or 0),
        total_iterations=int(loaded.meta.get("total_iterations") or 0),
        thresholds=thresholds, healthy_fc_satisfied=share, extra=extra)
    return CalibrationResult(path, dict(thresholds), dict(loaded.thresholds), len(healthy), share,
                             min_ml, loaded.config.model.map_flips)


def _min_lesion_volume(loaded: Any, cases: list, threshold: float, device: Any,
                       batch_size: int) -> Generator[TrainEvent, None, float]:
    """Measure the healthy-data minimum lesion volume of ``cases`` at ``threshold``.

    :func:`healthy_component_volume` of the 3-D components on the lesion-free slices of every
    case (whole volumes, as ``cavlog predict`` segments them).
    """
    volumes: list[float] = []
    for k, case in enumerate(iter_loaded_cases(cases)):
        # fp32, as the thresholds above (``_validate``): calibration must not depend on whether
        # the CPU has bf16 units.
        result = drain(predict_volume(loaded, case, batch_size=batch_size, device=device,
                                      precision="fp32"))
        mask = mask_in_brain(result.anomaly, case.brain_mask, threshold)
        mask &= lesion_free_slices(case)[None, None, :]
        table = find_lesions(mask, affine=case.affine)
        volumes.extend(les.volume_ml for les in table.lesions)
        yield TrainEvent(0, 0, 0, "prepare", {"lesion_cases_done": k + 1,
                                              "lesion_cases_total": len(cases)})
    return healthy_component_volume(volumes)
