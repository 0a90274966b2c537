"""Training: one generator, :func:`fit`, behind `cavlog train`/`finetune`, the GUI and benchmarks.

It owns data, devices, mixed precision, DDP, logging and checkpoints; the loss and the optimiser
step belong to the :class:`~cavlog_core.methods.base.Method` (``config.train.method``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._atomic import atomic_write_text, remove_stale_temporaries
from .._json import json_safe
from .._lock import folder_lock
from .._progress import drain, relay
from ..checkpoint import config_from_payload, load_weights, read_checkpoint, save_checkpoint
from ..config import RunConfig, TrainConfig
from ..device import autocast, cpu_bf16_units, resolve_device, warn_if_cpu_fallback
from ..errors import CavlogError
from ..maps.normalize import normalize_maps
from ..maps.thresholds import healthy_fpr_thresholds, healthy_thresholds
from ..methods import Batch, Logs, Method, get_method, read_logs
from .distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_buffers,
    init_distributed,
    wrap_ddp,
)
from .events import FitResult, TrainEvent, prepare_event

__all__ = ["MAX_FALLBACK_VALIDATION_SLICES", "finetune_config", "fit", "run_fit"]

#: When the validation split has no healthy slice, thresholds and the f_c share are computed on
#: at most this many (seeded, random) training slices.
MAX_FALLBACK_VALIDATION_SLICES = 1024
CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
CONFIG_NAME = "config.json"


@dataclasses.dataclass(frozen=True)
class _Slices:
    """Training or validation slices: CPU tensors, or with CUDA on the GPU or pinned."""

    images: Tensor  # (N, 1, R, R) float16/32
    brain: Tensor  # (N, 1, R, R) bool

    def __len__(self) -> int:
        return int(self.images.shape[0])


def finetune_config(base: RunConfig, **train_overrides: Any) -> RunConfig:
    """Return the configuration for fine-tuning a trained model on a folder of healthy scans.

    Keeps the model and preprocessing of ``base`` (the weights must fit), uses every brain slice
    (``slices="brain"``; lesion-free ones only where a segmentation exists), every case for
    training (``split_fractions=(1, 0, 0)``) and no warm-up (the model is already trained);
    ``train_overrides`` replace any other :class:`~cavlog_core.config.TrainConfig` field.
    """
    pre = dataclasses.replace(base.preprocess, slices="brain")
    fields: dict[str, Any] = {"split_fractions": (1.0, 0.0, 0.0), "warmup_iterations": 0,
                              "epochs": None}
    fields.update({k: v for k, v in train_overrides.items() if v is not None})
    return dataclasses.replace(base, preprocess=pre,
                               train=dataclasses.replace(base.train, **fields))


def _seed_for(seed: int, *parts: int) -> int:
    """Return a 63-bit seed mixing the run seed with counters (iteration, rank, epoch ...)."""
    h = (seed + 0x9E3779B9) & 0xFFFFFFFFFFFFFFFF
    for p in parts:
        h = ((h ^ (p + 0x632BE5AB)) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def _as_slices(arrays: Any, resolution: int, what: str) -> _Slices:
    images, brain = getattr(arrays, "images", None), getattr(arrays, "brain", None)
    if images is None or brain is None:
        raise CavlogError(f"{what}: expected a dataset folder or SliceArrays, got "
                          f"{type(arrays).__name__}")
    images = torch.as_tensor(np.ascontiguousarray(images))
    brain = torch.as_tensor(np.ascontiguousarray(brain)).bool()
    shape = (resolution, resolution)
    if images.dim() != 4 or images.shape[1] != 1 or tuple(images.shape[2:]) != shape \
            or brain.shape != images.shape:
        raise CavlogError(f"{what}: slices of shape {tuple(images.shape)} (brain "
                          f"{tuple(brain.shape)}), expected (N, 1, {resolution}, {resolution})")
    if not images.is_floating_point():
        images = images.float()
    return _Slices(images, brain)


def _healthy_arrays(arrays: Any) -> Any:
    from ..data import SliceArrays, healthy

    return healthy(arrays) if isinstance(arrays, SliceArrays) else arrays


def _prepare_data(
    config: RunConfig, data: Any, val_data: Any, cache_dir: str | Path | None, info: DistInfo
) -> Generator[TrainEvent, None, tuple[Any, Any]]:
    """Load healthy training (and validation) slices; yields ``prepare`` events per case."""
    from ..data import find_cases, iter_slice_arrays, split_cases

    def build(cases: list, what: str, required: bool) -> Generator[TrainEvent, None, Any]:
        gen = iter_slice_arrays(cases, config.preprocess, cache_dir=cache_dir, healthy_only=True)
        try:
            return (yield from relay(gen, lambda p: prepare_event(what, p.done, p.total)))
        except CavlogError as err:
            if required:
                raise CavlogError(f"{data}: {err}") from None
            return None

    train = val = None
    if isinstance(data, (str, Path)):
        cases = find_cases(data)
        split = split_cases([c.case_id for c in cases], config.train.split_fractions,
                            config.train.seed)
        by_split = {k: [c for c in cases if c.case_id in set(v)] for k, v in split.items()}
        if not by_split["train"]:
            raise CavlogError(f"{data}: the train split is empty ({len(cases)} case(s), "
                              f"split_fractions={config.train.split_fractions})")
        # Rank 0 fills the slice cache first; the other ranks then read it.
        for turn in (True, False):
            if info.is_main == turn:
                train = yield from build(by_split["train"], "train", True)
                if by_split["val"] and val_data is None:
                    val = yield from build(by_split["val"], "val", False)
            barrier(info)
    else:
        train = _healthy_arrays(data)
    if val_data is not None:
        if isinstance(val_data, (str, Path)):
            val = yield from build(find_cases(val_data), "val", False)
        else:
            val = _healthy_arrays(val_data)
    return train, val


def _batches_for_epoch(n: int, batch_size: int, seed: int, epoch: int) -> Tensor:
    """Seeded permutation of the ``n`` slices for ``epoch``, shaped (steps, batch)."""
    g = torch.Generator().manual_seed(_seed_for(seed, 1, epoch))
    perm = torch.randperm(n, generator=g)
    if n < batch_size:
        return perm.view(1, n)
    steps = n // batch_size  # drop the incomplete last batch: BatchNorm prefers equal batches
    return perm[: steps * batch_size].view(steps, batch_size)


def _to_device(slices: _Slices, index: Tensor, device: torch.device, *,
               channels_last: bool = False) -> Batch:
    index = index.to(slices.images.device, non_blocking=True)  # data resident on the GPU
    images = slices.images.index_select(0, index)
    brain = slices.brain.index_select(0, index)
    cuda = device.type == "cuda"
    images = images.to(device, non_blocking=cuda).float()
    brain = brain.to(device, non_blocking=cuda)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return Batch(images=images, brain=brain)


def _channels_last(device: torch.device) -> bool:
    """Whether training runs channels-last (NHWC): on CUDA and on the CPU, fp32 or bf16.

    cuDNN and oneDNN run these convolutions on NHWC blocks; from NCHW every convolution of the
    forward and of both backward passes reorders its tensors. On 2 CPU cores the demo model's
    fine-tune step is 1.07x (fp32) and 1.48x (bf16) faster NHWC (``benchmarks/speed.py``).
    """
    return device.type in ("cuda", "cpu")


def _cpu_bf16(device: torch.device, train: TrainConfig) -> bool:
    return train.cpu_bf16 and device.type == "cpu" and bool(cpu_bf16_units())


def _autocast(device: torch.device, train: TrainConfig) -> contextlib.AbstractContextManager:
    """Return the training autocast: bf16 or nothing.

    bf16 on CUDA when ``TrainConfig.amp``, on a CPU with bf16 units when
    ``TrainConfig.cpu_bf16``; full fp32 elsewhere.
    """
    bf16 = (train.amp and device.type == "cuda") or _cpu_bf16(device, train)
    return autocast(device, "bf16" if bf16 else "fp32")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _validate(
    method: Method, modules: nn.ModuleDict, slices: _Slices, config: RunConfig,
    device: torch.device, total: int,
) -> Generator[TrainEvent, None, tuple[float | None, dict[str, float]]]:
    """Healthy f_c share and healthy thresholds, in evaluation mode, batch by batch."""
    modules.eval()
    keep = slices.brain.flatten(1).any(dim=1)
    slices = _Slices(slices.images[keep], slices.brain[keep])
    n = len(slices)
    if n == 0:
        return None, {}
    bs = config.train.batch_size
    sums: dict[str, float] = {}
    pooled: list[Tensor] = []  # healthy brain pixels, for the false-positive-rate thresholds
    # Keep at most ~20 M pooled values: a fixed subsampling stride, the same for every batch.
    stride = max(1, int(slices.brain.sum()) // 20_000_000 + 1)
    satisfied = 0
    has_fc = False
    for start in range(0, n, bs):
        index = torch.arange(start, min(n, start + bs))
        batch = _to_device(slices, index, device,
                           channels_last=_channels_last(device))
        with _autocast(device, config.train):
            raw, fc = method.maps_and_fc(modules, batch.images, batch.brain)
        maps = normalize_maps(raw.float(), batch.brain, erosion=config.preprocess.mask_erosion)
        # healthy_thresholds averages per-image percentiles: weighting batch means by their
        # sizes gives exactly the mean over all slices.
        for key, value in healthy_thresholds(maps, batch.brain).items():
            sums[key] = sums.get(key, 0.0) + value * len(index)
        pooled.append(maps[batch.brain.to(maps.device)].float().cpu()[::stride])
        if fc is not None:
            has_fc = True
            satisfied += int((fc <= 0).sum())
        yield TrainEvent(total, total, 0, "validate", {"validated": min(n, start + bs) / n})
    thresholds = {k: v / n for k, v in sums.items()}
    values = torch.cat(pooled) if pooled else torch.zeros(0)
    if values.numel():
        thresholds.update(healthy_fpr_thresholds(values))
    return (satisfied / n if has_fc else None), thresholds


def fit(
    config: RunConfig,
    data: Any,
    *,
    out_dir: str | Path,
    resume: bool = False,
    init_checkpoint: str | Path | None = None,
    val_data: Any = None,
    cache_dir: str | Path | None = None,
) -> Generator[TrainEvent, None, FitResult]:
    """Train ``config.train.method`` on healthy slices; a generator of :class:`TrainEvent`.

    Parameters
    ----------
    config : RunConfig
        Preprocessing, model and training settings (ignored on ``resume`` except the device and
        ``amp``: the checkpoint's config is used).
    data : path or SliceArrays
        A dataset root (``find_cases``; the seeded patient split ``split_fractions``/``seed``;
        the lesion-free slices of the train split, ``config.preprocess.slices``) or ready
        :class:`~cavlog_core.data.SliceArrays` (lesion slices are dropped when labelled).
    out_dir : path
        Run folder: ``checkpoint.pt`` (atomic, every ``checkpoint_every`` iterations and at the
        end), ``config.json``, ``log.jsonl`` (one JSON object per logged event).
    resume : bool
        Continue ``out_dir/checkpoint.pt`` (weights, optimiser, iteration) to the same total.
        Batches and noise are seeded per iteration, so on the CPU a resumed run ends with the
        same weights as an uninterrupted one.
    init_checkpoint : path, optional
        Start from these weights (not the optimiser): fine-tuning, see :func:`finetune_config`.
    val_data : path or SliceArrays, optional
        Healthy slices for the f_c share and thresholds; default: the val split of ``data``
        (when it is a path), else, or when that has no healthy slice, up to
        :data:`MAX_FALLBACK_VALIDATION_SLICES` training slices.
    cache_dir : path, optional
        Slice cache folder for :func:`~cavlog_core.data.build_slice_arrays`.

    Yields
    ------
    TrainEvent
        ``prepare`` per case loaded, one per iteration (``warmup``/``constrained``), ``validate``
        per validation batch, then ``done``.

    Returns
    -------
    FitResult
        Via ``StopIteration.value`` (see :func:`run_fit`).

    Raises
    ------
    CavlogError
        No healthy slices, an existing checkpoint without ``resume``, a checkpoint that does not
        fit, or a NaN/Inf loss (the iteration is named; the last checkpoint on disk is kept).

    Notes
    -----
    Under ``torchrun --nproc-per-node N`` the modules are wrapped in DistributedDataParallel
    (NCCL on CUDA, gloo on the CPU); each global batch of ``batch_size`` is split across ranks
    and only rank 0 writes files. CUDA runs use bf16 autocast (``amp``), channels-last and
    pinned host memory; the CPU runs in fp32.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CavlogError(f"--out {out_dir}: exists and is not a folder")
    writer = os.environ.get("RANK", "0") == "0"  # under DDP only rank 0 writes files
    lock = folder_lock(out_dir, what="another training run") if writer \
        else contextlib.nullcontext()
    with lock:
        if writer:
            remove_stale_temporaries(out_dir)
        return (yield from _fit_locked(config, data, out_dir=out_dir, resume=resume,
                                       init_checkpoint=init_checkpoint, val_data=val_data,
                                       cache_dir=cache_dir))


def _fit_locked(config: RunConfig, data: Any, *, out_dir: Path, resume: bool,
                init_checkpoint: str | Path | None, val_data: Any,
                cache_dir: str | Path | None) -> Generator[TrainEvent, None, FitResult]:
    ckpt_path = out_dir / CHECKPOINT_NAME
    payload = None
    if resume:
        if not ckpt_path.is_file():
            raise CavlogError(f"{out_dir}: no {CHECKPOINT_NAME} to resume from")
        payload = read_checkpoint(ckpt_path)
        stored = config_from_payload(ckpt_path, payload)
        config = dataclasses.replace(stored, train=dataclasses.replace(
            stored.train, device=config.train.device, amp=config.train.amp))
    elif ckpt_path.exists():
        raise CavlogError(f"{ckpt_path}: already exists; resume it (--resume) or choose another "
                          "output folder")

    device = resolve_device(config.train.device)
    warn_if_cpu_fallback(config.train.device, device)
    info, device, created = init_distributed(device)
    try:
        return (yield from _fit(config, data, out_dir=out_dir, payload=payload,
                                init_checkpoint=init_checkpoint, val_data=val_data,
                                cache_dir=cache_dir, device=device, info=info))
    finally:
        if created:
            torch.distributed.destroy_process_group()


@dataclasses.dataclass(eq=False)
class _RunDir:
    """The run folder: ``config.json``, the ``log.jsonl`` history and the checkpoint.

    Only rank 0 writes. Every checkpoint is written atomically by :func:`save_checkpoint`.
    """

    out_dir: Path
    info: DistInfo
    ckpt_path: Path = dataclasses.field(init=False)
    log_path: Path = dataclasses.field(init=False)
    _log_file: Any = dataclasses.field(default=None, init=False)

    def __post_init__(self) -> None:
        self.ckpt_path = self.out_dir / CHECKPOINT_NAME
        self.log_path = self.out_dir / LOG_NAME

    def open(self, config: RunConfig, *, resumed: bool) -> None:
        if self.info.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / CONFIG_NAME,
                              json.dumps(config.to_dict(), indent=2) + "\n")
            self._log_file = open(self.log_path, "a" if resumed else "w", encoding="utf-8")

    def log(self, event: TrainEvent) -> None:
        if self._log_file is not None:
            self._log_file.write(json.dumps(json_safe(event.to_json())) + "\n")
            self._log_file.flush()

    def save(self, *, method: Method, modules: nn.ModuleDict, optimizers: dict, iteration: int,
             total: int, thresholds: dict[str, float], share: float | None, device: torch.device,
             extra: dict[str, Any]) -> None:
        if self.info.is_main:
            save_checkpoint(self.ckpt_path, method=method, modules=modules, optimizers=optimizers,
                            iteration=iteration, total_iterations=total, thresholds=thresholds,
                            healthy_fc_satisfied=share, rng=_rng_state(device), extra=extra)

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def _train_and_val(config: RunConfig, data: Any, train_arrays: Any,
                   val_arrays: Any, device: torch.device) -> tuple[_Slices, _Slices]:
    """Return the training slices (on the GPU, or pinned, with CUDA) and the validation slices.

    Validation falls back to a fixed sample of the training slices when the data have no
    healthy validation slice.
    """
    res = config.model.resolution
    train = _as_slices(train_arrays, res, "training data")
    if len(train) == 0:
        raise CavlogError(f"{data}: no healthy (lesion-free) slices to train on")
    val = _as_slices(val_arrays, res, "validation data") if val_arrays is not None else None
    if val is None or len(val) == 0:
        g = torch.Generator().manual_seed(_seed_for(config.train.seed, 2))
        pick = torch.randperm(len(train), generator=g)[:MAX_FALLBACK_VALIDATION_SLICES]
        val = _Slices(train.images[pick], train.brain[pick])
    if device.type == "cuda":
        train = _resident_or_pinned(train, device)
    return train, val


def _resident_or_pinned(slices: _Slices, device: torch.device) -> _Slices:
    """Return the training slices on the GPU, or pinned on the host when they do not fit.

    Resident when they take under a quarter of the GPU's free memory (BraTS'19 at 224² in
    float16 is ~0.3 GB): no host gather or copy per batch then. Pinned memory otherwise, for
    asynchronous copies.
    """
    size = (slices.images.element_size() * slices.images.nelement()
            + slices.brain.element_size() * slices.brain.nelement())
    free, _ = torch.cuda.mem_get_info(device)
    if size < free // 4:
        return _Slices(slices.images.to(device), slices.brain.to(device))
    return _Slices(slices.images.pin_memory(), slices.brain.pin_memory())


def _build_modules(method: Method, config: RunConfig, *, payload: dict | None, ckpt_path: Path,
                   init_checkpoint: str | Path | None, device: torch.device) -> nn.ModuleDict:
    """Build the method's modules, seeded, with the resumed or starting checkpoint's weights."""
    torch.manual_seed(_seed_for(config.train.seed, 0))  # same initial weights for a given seed
    modules = method.build()
    if payload is not None:
        load_weights(ckpt_path, payload, modules)
    elif init_checkpoint is not None:
        init = read_checkpoint(init_checkpoint)
        if init.get("method") != method.name:
            raise CavlogError(f"{init_checkpoint}: holds method {init.get('method')!r}, not "
                              f"{method.name!r}")
        load_weights(init_checkpoint, init, modules)
    modules.to(device)
    if _channels_last(device):
        # Module.to accepts memory_format at runtime (it forwards to Tensor.to); the stubs omit it.
        modules.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return modules


def _restore_optimizers(method: Method, modules: nn.ModuleDict, payload: dict | None,
                        ckpt_path: Path) -> tuple[dict, int]:
    """Return the method's optimisers (stored states when resuming) and the first iteration."""
    optimizers = method.optimizers(modules)
    if payload is None:
        return optimizers, 0
    stored = payload.get("optimizers", {})
    if set(stored) != set(optimizers):
        raise CavlogError(f"{ckpt_path}: optimiser states {sorted(stored)} do not match "
                          f"{sorted(optimizers)}")
    for name, opt in optimizers.items():
        opt.load_state_dict(stored[name])
    return optimizers, int(payload.get("iteration", 0))


def _fit(
    config: RunConfig, data: Any, *, out_dir: Path, payload: dict | None,
    init_checkpoint: str | Path | None, val_data: Any, cache_dir: str | Path | None,
    device: torch.device, info: DistInfo,
) -> Generator[TrainEvent, None, FitResult]:
    train_cfg = config.train
    run = _RunDir(out_dir, info)
    method = get_method(train_cfg.method)(config)
    config = method.config  # with every method option resolved, as the checkpoint stores it
    if info.world_size > train_cfg.batch_size:
        raise CavlogError(f"batch_size={train_cfg.batch_size} is smaller than the "
                          f"{info.world_size} DDP processes")

    train_arrays, val_arrays = yield from _prepare_data(config, data, val_data, cache_dir, info)
    train, val = _train_and_val(config, data, train_arrays, val_arrays, device)
    modules = _build_modules(method, config, payload=payload, ckpt_path=run.ckpt_path,
                             init_checkpoint=init_checkpoint, device=device)
    optimizers, start = _restore_optimizers(method, modules, payload, run.ckpt_path)
    train_modules = wrap_ddp(modules, info, device)

    bs = train_cfg.batch_size
    steps_per_epoch = max(1, len(train) // bs)
    total = (train_cfg.epochs * steps_per_epoch if train_cfg.epochs is not None
             else train_cfg.iterations)
    if not method.trainable:
        total = start = 0
    extra = {"train_slices": len(train), "val_slices": len(val), "world_size": info.world_size,
             "data": str(data) if isinstance(data, (str, Path)) else type(data).__name__,
             "init_checkpoint": None if init_checkpoint is None else str(init_checkpoint)}

    def save(iteration: int, thresholds: dict[str, float], share: float | None,
             finished: bool) -> None:
        run.save(method=method, modules=modules, optimizers=optimizers, iteration=iteration,
                 total=total, thresholds=thresholds, share=share, device=device,
                 extra={**extra, "finished": finished})

    def checkpoint_due(it: int) -> bool:  # a periodic checkpoint after iteration it + 1
        return (it + 1) % train_cfg.checkpoint_every == 0 and it + 1 < total

    def log_due(it: int) -> bool:
        return (it + 1) % train_cfg.log_every == 0 or it == start or it + 1 == total

    every = _reads_every_iteration(device)

    def read_due(it: int) -> bool:  # read the logs before a log line, a checkpoint or the end
        return every or log_due(it) or checkpoint_due(it)

    run.open(config, resumed=payload is not None)
    try:
        lr = optimizers[next(iter(optimizers))].param_groups[0]["lr"] if optimizers else 0.0
        saved_any = payload is not None
        ips = 0.0
        epoch_batches: tuple[int, Tensor] | None = None
        # The logs of the iterations since the last read, still on the device, and the seconds
        # and images they took: a GPU runs ahead until the next read (see _reads_every_iteration).
        pending: list[tuple[int, Logs]] = []
        busy, seen = 0.0, 0
        for it in range(start, total):
            epoch, step = divmod(it, steps_per_epoch)
            if epoch_batches is None or epoch_batches[0] != epoch:
                order = _batches_for_epoch(len(train), bs, train_cfg.seed, epoch)
                epoch_batches = (epoch, order.to(train.images.device))
            rows = epoch_batches[1][step]
            tic = time.perf_counter()
            pending.append((it, _train_step(method, train_modules, optimizers, train,
                                            rows[info.rank::info.world_size], it, train_cfg,
                                            device, info.rank)))
            seen += len(rows)
            if read_due(it):
                read = all_reduce_mean(read_logs(logs for _, logs in pending), info, device)
                busy += time.perf_counter() - tic  # the read waits for the device's backlog
                speed = seen / max(busy, 1e-9)
                keep = 0.9 ** len(pending)  # the same smoothing per iteration, however many read
                ips = speed if it == start else keep * ips + (1 - keep) * speed
                for i, logs in zip((i for i, _ in pending), read):
                    event = _iteration_event(logs, i, i // steps_per_epoch, total, train_cfg,
                                             ips=ips, lr=lr, batch=len(rows))
                    _stop_if_not_finite(event, run, saved_any)
                    if log_due(i):
                        run.log(event)
                pending.clear()
                busy, seen = 0.0, 0
            else:
                busy += time.perf_counter() - tic
                event = _iteration_event({}, it, epoch, total, train_cfg, ips=ips, lr=lr,
                                         batch=len(rows))
            # Save before yielding: a consumer that stops after event k finds checkpoint k.
            if checkpoint_due(it):
                save(it + 1, {}, None, finished=False)
                saved_any = True
            try:
                yield event
            except GeneratorExit:
                # The consumer stopped (GUI cancel, Ctrl-C in a loop): leave a resumable
                # checkpoint of every completed iteration, then let the generator close; not
                # if an unread iteration's loss was NaN/Inf (the last checkpoint is kept).
                unread = read_logs(logs for _, logs in pending)
                finite = all(math.isfinite(row.get("loss", 0.0)) for row in unread)
                if not checkpoint_due(it) and finite:
                    save(it + 1, {}, None, finished=False)
                raise

        # Ranks may differ in their last BatchNorm update; keep rank 0's statistics everywhere.
        broadcast_buffers(modules, info)
        share, thresholds = yield from _validate(method, modules, val, config, device, total)
        save(total, thresholds, share, finished=True)
        summary = dict(thresholds)
        if share is not None:
            summary["healthy_fc_satisfied"] = share
        done = TrainEvent(total, total, max(0, total - 1) // steps_per_epoch, "done", summary,
                          images_per_s=ips, lr=lr)
        run.log(done)
        yield done
        barrier(info)
    finally:
        run.close()
    return FitResult(checkpoint_path=run.ckpt_path, iterations=total, healthy_fc_satisfied=share,
                     thresholds=thresholds, history_path=run.log_path)


def _reads_every_iteration(device: torch.device) -> bool:
    """Whether :func:`fit` reads the method's logs after every iteration, or only when due.

    On the CPU reading a scalar waits for nothing, and every event then carries its losses. On
    a GPU each read waits until the device has run everything queued, so the logs stay on the
    device and are read in one copy before a log line (``log_every``), a checkpoint and the
    last iteration; the events in between carry no losses.
    """
    return device.type == "cpu"


def _train_step(method: Method, modules: nn.ModuleDict,
                optimizers: dict[str, torch.optim.Optimizer], train: Any, index: Tensor,
                it: int, cfg: TrainConfig, device: torch.device, rank: int) -> Logs:
    """One optimisation step of iteration ``it`` on rows ``index``; the method's logs."""
    # Reseeding per iteration makes sampling noise independent of where a run resumed.
    torch.manual_seed(_seed_for(cfg.seed, 3, it, rank))
    batch = _to_device(train, index, device, channels_last=_channels_last(device))
    modules.train()
    with _autocast(device, cfg):
        return method.training_step(modules, optimizers, batch, it)


def _iteration_event(logs: dict[str, float], it: int, epoch: int, total: int, cfg: TrainConfig,
                     *, ips: float, lr: float, batch: int) -> TrainEvent:
    """Return the :class:`TrainEvent` of iteration ``it`` (0-based) with the method's logs."""
    return TrainEvent(
        iteration=it + 1, total_iterations=total, epoch=epoch,
        phase="warmup" if it < cfg.warmup_iterations else "constrained",
        losses=logs, mean_fc=float(logs.get("mean_fc", float("nan"))),
        barrier_active=bool(logs.get("barrier_active", 0.0) > 0),
        images_per_s=ips, lr=lr, seconds_left=(total - it - 1) * batch / max(ips, 1e-9),
    )


def _stop_if_not_finite(event: TrainEvent, run: _RunDir, saved_any: bool) -> None:
    """Log ``event`` and stop training with a clear error when its loss is NaN or infinite."""
    loss = event.losses.get("loss", 0.0)
    if math.isfinite(loss):
        return
    run.log(event)
    kept = f"the last good checkpoint {run.ckpt_path} is kept" if saved_any \
        else "no checkpoint was written yet"
    raise CavlogError(f"iteration {event.iteration}: the loss is {loss} (NaN/Inf); training "
                      f"stopped ({kept}); try a lower --lr or --lam")


def run_fit(config: RunConfig, data: Any, **kwargs: Any) -> FitResult:
    """Drain :func:`fit` (same arguments) and return its :class:`FitResult`."""
    return drain(fit(config, data, **kwargs))
