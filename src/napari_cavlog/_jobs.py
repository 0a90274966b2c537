"""The work the widgets run in worker threads, as plain generators over ``cavlog_core`` (no Qt).

Each job is a generator that re-yields the core's progress events and returns a small result
object; the widgets drive it with :func:`napari_cavlog._runner.drive` inside a napari
``thread_worker`` and only update layers and controls from the events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cavlog_core.config import FINETUNE_ITERATIONS, ModelConfig, TrainConfig

from ._layers import case_from_layer
from ._models import load_checkpoint_cached
from ._orient import from_display, to_display
from ._threshold import ThresholdCache

_TRAIN, _MODEL = TrainConfig(), ModelConfig()

__all__ = [
    "Analysis",
    "FineTuneSettings",
    "analysis_job",
    "finetune_job",
    "finetune_problem",
    "lesion_table",
    "training_config",
]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of running a model on one scan, in display order ``(Z, Y', X)``.

    Attributes
    ----------
    anomaly : (Z, Y, X) float32 ndarray
        Min-max normalised anomaly map in [0, 1] (0 outside the processed brain).
    brain : (Z, Y, X) bool ndarray
        Brain mask used for normalisation and thresholding.
    cache : ThresholdCache
        Fast masks and scores for any threshold (with the ground truth when given).
    thresholds : dict of str to float
        The checkpoint's healthy thresholds (``healthy_p85`` ... ``healthy_p99``,
        ``healthy_fpr0.5`` ... ``healthy_fpr5``).
    case_id : str
    checkpoint : Path
    affine : (4, 4) ndarray
        The scan's canonical (RAS) voxel-to-mm affine (lesion volumes and centroids).
    min_lesion_ml : float
        The checkpoint's minimum lesion volume (set from healthy scans by ``cavlog calibrate``,
        else ``cavlog_core.lesions.DEFAULT_MIN_LESION_ML``).
    """

    anomaly: np.ndarray
    brain: np.ndarray
    cache: ThresholdCache
    thresholds: dict[str, float]
    case_id: str
    checkpoint: Path
    affine: np.ndarray
    min_lesion_ml: float

    @property
    def gt_threshold(self) -> float | None:
        """Ground-truth operating point: the F1-best threshold over the brain voxels (uses the
        ground truth; None without lesion in the brain). Computed on first use."""
        return self.cache.best_threshold()

    def with_ground_truth(self, gt: np.ndarray | None) -> Analysis:
        """The same map scored against new ground-truth labels (display order; None: none).

        The mask and error buffers (the labels layers' arrays) are kept, so no layer changes
        its array; no inference runs.
        """
        lesion = None if gt is None else np.asarray(gt) > 0
        cache = ThresholdCache(self.anomaly, self.brain, lesion, out=self.cache.buffer,
                               errors_out=None if lesion is None else self.cache.error_buffer)
        return dataclasses.replace(self, cache=cache)


def lesion_table(analysis: Analysis, threshold: float, *, min_volume_ml: float) -> Any:
    """3-D lesions of ``brain & (map >= threshold)``, as ``cavlog predict`` writes them.

    Returns
    -------
    cavlog_core.lesions.LesionTable
        Volumes in mL, centroids in canonical voxels and mm, max score, axial slice range (which
        is the display slice index: display axis 0 is the canonical ``Z``).
    """
    from cavlog_core.lesions import find_lesions

    cache = analysis.cache  # the mask at this threshold is usually in the buffer already
    buffer = cache.buffer if cache.threshold == float(threshold) else cache.mask(threshold)
    mask = from_display(buffer.view(bool))
    return find_lesions(mask, affine=analysis.affine, scores=from_display(analysis.anomaly),
                        min_volume_ml=min_volume_ml)


def analysis_job(
    *,
    flair: np.ndarray,
    metadata: dict[str, Any] | None,
    scale: tuple[float, ...],
    name: str,
    gt: np.ndarray | None,
    checkpoint: str | Path,
    device: str,
    batch_size: int,
    precision: str = "auto",
    mask_out: np.ndarray | None = None,
    errors_out: np.ndarray | None = None,
) -> Generator[Any, None, Analysis]:
    """Load the model, stream ``predict_volume`` events, then prepare live thresholding.

    Parameters
    ----------
    flair : (Z, Y, X) ndarray
        FLAIR layer data in display order.
    metadata, scale, name
        The FLAIR layer's metadata (geometry and brain mask), scale and name.
    gt : (Z, Y, X) integer ndarray, optional
        Ground-truth labels in display order (lesion = label > 0).
    checkpoint : path
        Model checkpoint file.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda:N"`` or ``"mps"``.
    batch_size : int
        Slices per forward pass.
    precision : {"auto", "fp32", "bf16"}
        Compute precision (``cavlog_core.device.resolve_precision``).
    mask_out, errors_out : (Z, Y, X) uint8 ndarray, optional
        Arrays the threshold cache writes masks and error labels into (the labels layers' data).

    Yields
    ------
    cavlog_core.inference.predict.PredictEvent
        One per processed axial slice (``slice_map`` in canonical ``(X, Y)``).

    Returns
    -------
    Analysis
    """
    from cavlog_core.device import resolve_device
    from cavlog_core.inference.predict import predict_volume
    from cavlog_core.lesions import min_lesion_ml

    case = case_from_layer(flair, metadata, scale, name=name)
    dev = str(resolve_device(device))
    loaded = load_checkpoint_cached(checkpoint, dev)
    result = yield from predict_volume(loaded, case, batch_size=batch_size, device=dev,
                                       precision=precision)
    anomaly = to_display(np.asarray(result.anomaly, dtype=np.float32))
    shown = ((metadata or {}).get("cavlog") or {}).get("brain_mask")  # the reader's, display order
    brain = shown if shown is not None and shown.shape == anomaly.shape \
        else to_display(case.brain_mask)
    lesion = None if gt is None else np.asarray(gt) > 0
    cache = ThresholdCache(anomaly, brain, lesion, out=mask_out,
                           errors_out=None if lesion is None else errors_out)
    thresholds = dict(
        getattr(result, "thresholds", None) or getattr(loaded, "thresholds", None) or {}
    )
    return Analysis(
        anomaly=anomaly,
        brain=brain,
        cache=cache,
        thresholds={k: float(v) for k, v in thresholds.items()},
        case_id=case.case_id,
        checkpoint=Path(checkpoint),
        affine=np.asarray(case.affine, dtype=np.float64),
        min_lesion_ml=min_lesion_ml(getattr(loaded, "meta", None)),
    )


# ---------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FineTuneSettings:
    """What the fine-tune widget asks for; the single source of its defaults.

    Defaults are ``cavlog_core.config``'s (``TrainConfig``, ``ModelConfig``,
    ``FINETUNE_ITERATIONS``). ``resolution`` and ``width`` apply from scratch only (a starting
    model's weights fix them); ``precision`` ``auto`` / ``bf16`` turns on bf16 autocast on CPUs
    with bf16 units (``TrainConfig.cpu_bf16``).
    """

    iterations: int = FINETUNE_ITERATIONS
    lr: float = _TRAIN.lr
    lam: float = _TRAIN.lam
    p: float = _TRAIN.p
    t: float = _TRAIN.t
    batch_size: int = _TRAIN.batch_size
    device: str = "auto"
    resolution: int = _MODEL.resolution
    width: float = _MODEL.width
    precision: str = "auto"


def training_config(base: Any | None, settings: FineTuneSettings) -> Any:
    """The ``RunConfig`` of a fine-tuning run (``cavlog_core.training.fit.finetune_config``).

    From a checkpoint's config ``base``, its model and preprocessing are kept (``resolution`` and
    ``width`` are ignored: the weights fix them) and there is no warm-up. From scratch
    (``base=None``), ``cavlog_core.config`` defaults at ``resolution`` and ``width``, with the
    warm-up capped at a fifth of the iterations. Either way every brain slice of the folder
    that has no lesion trains (``slices="brain"``, split ``(1, 0, 0)``).
    """
    import torch

    from cavlog_core.config import ModelConfig, PreprocessConfig, RunConfig
    from cavlog_core.device import resolve_precision
    from cavlog_core.training.fit import finetune_config

    s = settings
    overrides: dict[str, Any] = {}
    if base is None:
        base = RunConfig(preprocess=PreprocessConfig(resolution=s.resolution),
                         model=ModelConfig(resolution=s.resolution, width=s.width))
        overrides["warmup_iterations"] = min(base.train.warmup_iterations, s.iterations // 5)
    overrides["cpu_bf16"] = resolve_precision(s.precision, torch.device("cpu")) == "bf16"
    return finetune_config(
        base, iterations=s.iterations, lr=s.lr, lam=s.lam, p=s.p, t=s.t,
        batch_size=s.batch_size, device=s.device,
        checkpoint_every=max(1, min(base.train.checkpoint_every, s.iterations)), **overrides,
    )


def finetune_problem(data_dir: str, out_dir: str, start: str | Path | None) -> str | None:
    """The first problem with the fine-tune inputs (one line), or None; cheap, no scan is read.

    Checks: the data folder exists and holds cases, the output folder can be written (it is
    created) and holds no finished run, the starting checkpoint exists. Whether the scans hold
    lesion-free slices needs reading every scan, so ``fit`` checks it while preparing the data,
    before the first iteration (the widget shows that error the same way).
    """
    import os
    import tempfile

    from cavlog_core.data.io import find_cases
    from cavlog_core.errors import CavlogError

    if not data_dir.strip():
        return "choose the folder of healthy scans (or a BraTS folder)"
    try:
        find_cases(Path(data_dir).expanduser())
    except CavlogError as err:
        return str(err)
    if not out_dir.strip():
        return "choose an output folder for the fine-tuned model"
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        return f"{out}: output exists and is not a folder"
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".cavlog-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"{out}: output folder is not writable ({err.strerror or err})"
    if (out / "checkpoint.pt").exists():
        return f"{out}: already holds a run (checkpoint.pt); choose another output folder"
    if start is not None and not Path(start).is_file():
        return f"{start}: starting checkpoint not found"
    return None


def finetune_job(
    *,
    data_dir: str | Path,
    out_dir: str | Path,
    start: str | Path | None,
    settings: FineTuneSettings,
) -> Generator[Any, None, Any]:
    """Fine-tune (or train from scratch) on a folder with ``cavlog_core.training.fit``.

    Yields
    ------
    cavlog_core.training.events.TrainEvent
        Data preparation, then one per iteration, validation and ``done``.

    Returns
    -------
    cavlog_core.training.events.FitResult

    Raises
    ------
    CavlogError
        No lesion-free slice in the folder, an unusable checkpoint, an existing run in
        ``out_dir``, a NaN loss ... (one line).
    """
    from cavlog_core.checkpoint import config_from_payload, read_checkpoint
    from cavlog_core.training.fit import fit

    base = None if start is None else config_from_payload(start, read_checkpoint(start))
    config = training_config(base, settings)
    return (yield from fit(config, Path(data_dir).expanduser(), out_dir=Path(out_dir).expanduser(),
                           init_checkpoint=None if start is None else Path(start)))
