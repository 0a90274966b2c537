"""Anomaly maps for whole volumes, streamed slice by slice.

Silva-Rodríguez, Naranjo & Dolz (BMVC 2021), Sec. 3.3: for every axial slice, the Grad-CAM of the
latent mean at the constrained stage (no sigmoid) is up-sampled to the input, min-max normalised
inside the (slightly eroded) brain, and put back into the volume. Slices run through the network
in batches, but one :class:`PredictEvent` is yielded per slice so a GUI can display them as they
come.

Speed: inference runs on a private copy of the modules (:func:`inference_modules`) with every
eval-mode BatchNorm folded into the convolution before it, parameters frozen (the Grad-CAM only
needs gradients w.r.t. activations, so no weight-gradient work is done) and channels-last layout;
the copy is kept while the modules' weights are unchanged (:func:`cached_inference_modules`), so
a folder of scans or slice-by-slice GUI calls pay for it once. The method's own map computes the
Grad-CAM from the encoder alone (no decoder). On CUDA the batches are copied from pinned memory
without blocking; with ``precision="auto"`` the network runs under bfloat16 autocast on CUDA and on
CPUs with AMX / AVX-512-BF16 units, in float32 elsewhere.
"""

from __future__ import annotations

import copy
import threading
import time
import weakref
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from .._progress import drain
from ..checkpoint import LoadedCheckpoint, load_checkpoint
from ..config import InferenceConfig, PreprocessConfig
from ..data.io import Case, load_case
from ..data.preprocess import SliceBatch, prepare_slices, select_slices
from ..data.preprocess_torch import DeviceSlices, prepare_slices_on, to_device
from ..data.preprocess_torch import supports as supports_device_preprocessing
from ..device import autocast, resolve_device, resolve_precision
from ..errors import CavlogError
from ..maps.normalize import normalize_maps
from ..models.resnet_vae import BasicBlock

_INF = InferenceConfig()  # the defaults of every inference option

__all__ = [
    "PredictEvent",
    "PredictResult",
    "cached_inference_modules",
    "inference_modules",
    "iter_slice_maps",
    "predict",
    "predict_volume",
    "resolve_model",
]


@dataclass(frozen=True)
class PredictEvent:
    """One processed axial slice.

    Attributes
    ----------
    done, total : int
        Slices finished so far (1-based) and slices to process.
    z : int
        Axial index of this slice in the canonical volume.
    slice_map : (X, Y) float32 ndarray
        Its normalised anomaly map in [0, 1] (0 outside the brain); a copy, safe to keep.
    """

    done: int
    total: int
    z: int
    slice_map: np.ndarray

    @property
    def stage(self) -> str:
        """Always ``"predict"`` (the :class:`~cavlog_core.Progress` vocabulary)."""
        return "predict"


@dataclass(frozen=True, eq=False)
class PredictResult:
    """Anomaly map of one volume.

    Attributes
    ----------
    anomaly : (X, Y, Z) float32 ndarray
        Normalised maps in [0, 1] on the case's canonical grid; 0 outside the brain and on
        slices that were not processed.
    z : (N,) int64 ndarray
        Axial slices that were processed.
    thresholds : dict of str to float
        The checkpoint's healthy thresholds (``healthy_p85`` ... ``healthy_p99``).
    case_id : str
    seconds : float
        Wall time of the whole prediction (loading the checkpoint excluded).
    """

    anomaly: np.ndarray
    z: np.ndarray
    thresholds: dict[str, float]
    case_id: str = ""
    seconds: float = 0.0

    @property
    def z_processed(self) -> np.ndarray:
        """Alias of :attr:`z` (name used in ``docs/ARCHITECTURE.md``)."""
        return self.z


def resolve_model(
    model: LoadedCheckpoint | str | Path, device: str | torch.device = "auto"
) -> tuple[LoadedCheckpoint, torch.device]:
    """Return a loaded checkpoint on the device to use.

    A path is loaded with :func:`~cavlog_core.checkpoint.load_checkpoint`. For an
    already loaded checkpoint, ``"auto"`` means the device its modules are on; its modules are
    never moved (inference runs on a copy, see :func:`inference_modules`).
    """
    if isinstance(model, (str, Path)):
        dev = resolve_device(device)
        return load_checkpoint(model, device=dev), dev
    if not isinstance(model, LoadedCheckpoint):
        raise CavlogError(
            f"model of type {type(model).__name__}: expected a checkpoint path or LoadedCheckpoint"
        )
    current = next((p.device for p in model.modules.parameters()), torch.device("cpu"))
    if isinstance(device, str) and device.strip().lower() == "auto":
        return model, current
    return model, resolve_device(device)


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """``bn(conv(x))`` as one convolution (BatchNorm in evaluation mode is an affine map)."""
    # Only called on pairs that passed _foldable: tracked running statistics.
    assert bn.running_mean is not None and bn.running_var is not None
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    # _ConvNd types these as tuple[int, ...]; on a Conv2d they have two entries.
    # skip_init: the weights are overwritten below, so their random initialisation is wasted work.
    fused = nn.utils.skip_init(nn.Conv2d, conv.in_channels, conv.out_channels,
                               cast("tuple[int, int]", conv.kernel_size),
                               cast("tuple[int, int]", conv.stride),
                               cast("str | tuple[int, int]", conv.padding),
                               cast("tuple[int, int]", conv.dilation), conv.groups, bias=True,
                               padding_mode=conv.padding_mode, device=conv.weight.device,
                               dtype=conv.weight.dtype)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    assert fused.bias is not None  # built with bias=True
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.view(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and not bn.training
            and bn.affine and bn.running_mean is not None and bn.running_var is not None)


def _fold_batchnorm(root: nn.Module) -> int:
    """Fold Conv2d -> BatchNorm2d pairs in place; returns how many were folded.

    Only pairs whose order is certain are touched: consecutive items of an ``nn.Sequential`` and
    the ``conv1/bn1``, ``conv2/bn2`` pairs of the ResNet :class:`BasicBlock`.
    """
    n = 0
    for module in list(root.modules()):
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if _foldable(module[i], module[i + 1]):
                    # _foldable checked that these are a Conv2d and a BatchNorm2d.
                    module[i] = _fold(cast(nn.Conv2d, module[i]),
                                      cast(nn.BatchNorm2d, module[i + 1]))
                    module[i + 1] = nn.Identity()
                    n += 1
        if isinstance(module, BasicBlock):
            for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2")):
                conv, bn = getattr(module, conv_name), getattr(module, bn_name)
                if _foldable(conv, bn):
                    setattr(module, conv_name, _fold(conv, bn))
                    setattr(module, bn_name, nn.Identity())
                    n += 1
    return n


def inference_modules(modules: nn.ModuleDict, device: torch.device) -> nn.ModuleDict:
    """Return a private, faster copy of ``modules`` for inference on ``device``.

    Evaluation mode, BatchNorm folded into the preceding convolutions, parameters with
    ``requires_grad=False``, channels-last memory layout. The caller's modules are not modified
    (training may continue on them, e.g. fine-tuning in the GUI).
    """
    twin = copy.deepcopy(modules).eval()
    _fold_batchnorm(twin)
    for p in twin.parameters():
        p.requires_grad_(False)
    # Module.to accepts memory_format at runtime (it forwards to Tensor.to); the stubs omit it.
    return twin.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]


# One inference twin per ModuleDict, rebuilt when the weights change (weak keys: a dropped
# checkpoint frees its twin).
_TWINS: weakref.WeakKeyDictionary[nn.ModuleDict, tuple[tuple[Any, ...], nn.ModuleDict]] = (
    weakref.WeakKeyDictionary())
_TWINS_LOCK = threading.Lock()


def _state_key(modules: nn.ModuleDict, device: torch.device) -> tuple[Any, ...]:
    """Return what the twin depends on: the device and every parameter and buffer.

    A tensor counts by its storage and in-place version (an optimizer step or
    ``load_state_dict`` bumps the version).
    """
    tensors = [*modules.parameters(), *modules.buffers()]
    return (str(device), *((t.data_ptr(), t._version, t.dtype) for t in tensors))


def cached_inference_modules(modules: nn.ModuleDict, device: torch.device) -> nn.ModuleDict:
    """:func:`inference_modules`, reused while ``modules``' weights and buffers are unchanged.

    Fine-tuning (an optimizer step, ``load_state_dict``) changes a tensor's version counter or
    storage, so the next call builds a fresh twin; the stale one is dropped. Writes through
    ``param.data`` bypass the version counter: code that edits weights that way should pass
    ``modules=inference_modules(...)`` to :func:`iter_slice_maps` itself.
    """
    key = _state_key(modules, device)
    with _TWINS_LOCK:
        hit = _TWINS.get(modules)
    if hit is not None and hit[0] == key:
        return hit[1]
    twin = inference_modules(modules, device)
    with _TWINS_LOCK:
        _TWINS[modules] = (key, twin)
    return twin


def _to_device(arr: np.ndarray | torch.Tensor, dev: torch.device, *,
               channels_last: bool) -> torch.Tensor:
    t = to_device(arr, dev)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def iter_slice_maps(
    loaded: LoadedCheckpoint,
    slices: SliceBatch | DeviceSlices,
    *,
    batch_size: int = _INF.batch_size,
    device: torch.device | None = None,
    modules: nn.ModuleDict | None = None,
    precision: str = _INF.precision,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Normalised anomaly maps of prepared slices, batch by batch.

    Parameters
    ----------
    loaded : LoadedCheckpoint
        Method and modules (evaluation mode) on ``device``.
    slices : SliceBatch or DeviceSlices
        From :func:`~cavlog_core.data.preprocess.prepare_slices` (or, on an accelerator,
        :func:`~cavlog_core.data.preprocess_torch.prepare_slices_on`) with the checkpoint's
        preprocessing (same resolution as the model).
    batch_size : int
        Slices per forward/backward pass.
    device : torch.device, optional
        Where to run (default: the device of the checkpoint's first parameter).
    modules : nn.ModuleDict, optional
        Prepared :func:`inference_modules` (default: :func:`cached_inference_modules`).
    precision : {"auto", "fp32", "bf16"}
        Compute precision (:func:`~cavlog_core.device.resolve_precision`: ``auto`` is bf16 on
        CUDA and on CPUs with AMX / AVX-512-BF16).

    Yields
    ------
    (start, maps)
        ``maps`` is a ``(b, 1, R, R)`` float32 Tensor in [0, 1] on ``device`` for the slices
        ``start .. start + b - 1`` (normalised inside the brain eroded by
        ``PreprocessConfig.mask_erosion``, 0 outside).
    """
    if batch_size < 1:
        raise CavlogError(f"batch_size={batch_size}: must be >= 1")
    dev = device or next((p.device for p in loaded.modules.parameters()), torch.device("cpu"))
    res = loaded.config.model.resolution
    if slices.images.shape[-1] != res:
        raise CavlogError(
            f"{slices.case_id}: slices at {slices.images.shape[-1]}² but the model expects {res}²"
        )
    erosion = loaded.config.preprocess.mask_erosion
    twin = modules if modules is not None else cached_inference_modules(loaded.modules, dev)
    n = len(slices)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        images = _to_device(slices.images[start:stop], dev, channels_last=True)
        brain = _to_device(slices.brain[start:stop], dev, channels_last=False)
        # Under bf16 the Grad-CAM's backward runs in bf16 too; maps are normalised in fp32.
        with autocast(dev, resolve_precision(precision, dev)):
            raw = loaded.method.maps(twin, images, brain)
        maps = normalize_maps(raw.float(), brain, erosion=erosion)
        yield start, maps


def _brain_z(case: Case, spec: str | np.ndarray | None, pre: PreprocessConfig) -> np.ndarray:
    if spec is None or (isinstance(spec, str) and spec == "brain"):
        # Every slice holding any brain, so the output volume has no holes.
        area = np.count_nonzero(case.brain_mask, axis=(0, 1))
        return np.flatnonzero(area).astype(np.int64)
    if isinstance(spec, str):
        return select_slices(case.brain_mask, spec, min_brain_fraction=pre.min_brain_fraction)
    return np.asarray(spec, dtype=np.int64).reshape(-1)


def _prepare_on_device(device: torch.device, pre: PreprocessConfig) -> bool:
    """Whether to prepare the slices in torch on ``device``.

    Yes on accelerators, for the settings :mod:`~cavlog_core.data.preprocess_torch` implements.
    On the CPU the numpy path stays: it is faster there (0.13 s against 0.21 s for a 240×240×155
    volume at 224², 2 cores: numpy's partition beats a full sort for the percentiles).
    """
    return device.type != "cpu" and supports_device_preprocessing(pre)


def _z_index(zs: np.ndarray) -> slice | torch.Tensor:
    """Return a run of consecutive slices as a ``slice`` (copies ~8x faster than a gather)."""
    if zs.size and np.array_equal(zs, np.arange(zs[0], zs[0] + zs.size)):
        return slice(int(zs[0]), int(zs[0]) + zs.size)
    return torch.from_numpy(zs)


def predict_volume(
    model: LoadedCheckpoint | str | Path,
    case: Case | str | Path,
    *,
    batch_size: int = _INF.batch_size,
    device: str | torch.device = _INF.device,
    slices: str | np.ndarray | None = _INF.slices,
    preprocess: PreprocessConfig | None = None,
    precision: str = _INF.precision,
) -> Generator[PredictEvent, None, PredictResult]:
    """Anomaly map of a volume; a generator of per-slice :class:`PredictEvent`.

    Parameters
    ----------
    model : LoadedCheckpoint or path
        A checkpoint (loaded once by the caller when predicting many cases).
    case : Case or path
        The scan (a path is read with :func:`~cavlog_core.data.io.load_case`).
    batch_size : int
        Slices per network pass.
    device : str or torch.device
        ``"auto"`` | ``"cpu"`` | ``"cuda[:N]"`` | ``"mps"``.
    slices : str, (N,) int array or None
        ``"brain"`` (default: every axial slice with any brain voxel), ``"central:N"``, or
        explicit indices.
    preprocess : PreprocessConfig, optional
        Overrides the checkpoint's preprocessing (the resolution must stay the model's).
    precision : {"auto", "fp32", "bf16"}
        ``auto``: bf16 on CUDA and on CPUs with AMX / AVX-512-BF16 units, else fp32
        (:func:`~cavlog_core.device.resolve_precision`; the map correlates >= 0.99 with fp32).

    Yields
    ------
    PredictEvent
        One per slice, in increasing ``z``.

    Returns
    -------
    PredictResult
        Via ``StopIteration.value``; :func:`predict` drains the generator for you.

    Notes
    -----
    Stopping early (``gen.close()``, or dropping the generator) is safe: nothing is written and
    the checkpoint's modules are never modified (inference uses a private copy).
    """
    t0 = time.perf_counter()
    loaded, dev = resolve_model(model, device)
    if not isinstance(case, Case):
        case = load_case(case)
    pre = preprocess or loaded.config.preprocess
    if pre.resolution != loaded.config.model.resolution:
        raise CavlogError(
            f"preprocess resolution {pre.resolution} differs from the model's "
            f"{loaded.config.model.resolution}"
        )
    z = _brain_z(case, slices, pre)
    batch: SliceBatch | DeviceSlices
    if _prepare_on_device(dev, pre):
        batch = prepare_slices_on(case, pre, z, dev)
        brain_s = batch.brain_slices
    else:
        batch = prepare_slices(case, pre, z, lesion=False)  # the map needs no ground truth
        assert batch.brain_slices is not None  # prepare_slices always fills it
        brain_s = torch.from_numpy(batch.brain_slices).to(dev)
    anomaly = np.zeros(case.shape, dtype=np.float32)
    # A slice-first view of the (X, Y, Z) volume: torch scatters along z faster than numpy.
    anomaly_z = torch.from_numpy(anomaly).permute(2, 0, 1)
    total = len(batch)
    done = 0
    resolve_precision(precision, dev)  # a bad value fails before any work
    for start, maps in iter_slice_maps(loaded, batch, batch_size=batch_size, device=dev,
                                       precision=precision):
        vol = batch.geometry.to_volume(maps[:, 0].float(), order=1).clamp_(0.0, 1.0)
        vol *= brain_s[start:start + vol.shape[0]]  # exactly 0 outside the brain
        vol = vol.cpu()  # one transfer (and sync) per batch, not per slice
        zs = batch.z[start:start + vol.shape[0]]
        anomaly_z[_z_index(zs)] = vol
        for i, zi in enumerate(zs):
            done += 1
            # vol is this batch's own array and is never written again: views are safe.
            yield PredictEvent(done, total, int(zi), vol[i].numpy())
    return PredictResult(anomaly, batch.z.copy(), dict(loaded.thresholds), case.case_id,
                         time.perf_counter() - t0)


def predict(model: LoadedCheckpoint | str | Path, case: Case | str | Path,
            **kwargs: Any) -> PredictResult:
    """Drain :func:`predict_volume` (same arguments) and return its :class:`PredictResult`."""
    return drain(predict_volume(model, case, **kwargs))
