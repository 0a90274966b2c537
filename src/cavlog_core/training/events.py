"""What :func:`cavlog_core.training.fit` yields while it runs and returns when it is done."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["FitResult", "Phase", "TrainEvent", "prepare_event"]

Phase = Literal["prepare", "warmup", "constrained", "validate", "done"]


@dataclass(frozen=True)
class TrainEvent:
    """Progress of a training run: data loading, one per iteration, validation, ``"done"``.

    Attributes
    ----------
    iteration : int
        Iterations (batches) completed so far, 1-based; ``total_iterations`` after training.
    total_iterations : int
        Iterations of the whole run (``TrainConfig.iterations`` or derived from ``epochs``).
    epoch : int
        0-based epoch of the last batch (an epoch is one pass over the healthy training slices).
    phase : {"prepare", "warmup", "constrained", "validate", "done"}
        ``prepare``: slices of one more case loaded (``losses`` holds ``train_cases_done`` /
        ``train_cases_total`` or the ``val_`` counterparts); ``warmup``: VAE loss only;
        ``constrained``: with the attention penalty; ``validate``: computing the healthy f_c
        share and thresholds; ``done``: checkpoint written.
    losses : dict of str to float
        The method's logs for the batch (``loss``, ``recon``, ``kl``, ``constraint`` ...), averaged
        over DDP ranks; ``validate``: ``validated`` (share done); ``done``: the healthy
        thresholds and ``healthy_fc_satisfied`` (when the method has a constraint). Off the
        CPU, iteration events carry them only every ``log_every`` iterations, at checkpoints
        and at the last iteration (reading them waits for the GPU), and are empty in between.
    mean_fc : float
        Batch mean of f_c(a) = (1 - mean(a)) - p (NaN for methods without attention, and for
        an iteration event without losses).
    barrier_active : bool
        Whether some image of the batch is in the penalty's linear / violated regime.
    images_per_s : float
        Training throughput over all ranks (smoothed).
    lr : float
        Learning rate of the first optimiser.
    seconds_left : float
        Estimated time to the last iteration at the current (smoothed) rate; NaN outside
        ``warmup`` / ``constrained``. A warm-up runs faster than the constrained phase, so
        during a warm-up the estimate is low.
    """

    iteration: int
    total_iterations: int
    epoch: int
    phase: Phase
    losses: dict[str, float] = field(default_factory=dict)
    mean_fc: float = float("nan")
    barrier_active: bool = False
    images_per_s: float = 0.0
    lr: float = 0.0
    seconds_left: float = float("nan")

    # The library's common progress vocabulary (cavlog_core.Progress).
    @property
    def stage(self) -> str:
        """The ``phase``."""
        return self.phase

    @property
    def done(self) -> int:
        """Iterations done; for ``prepare`` events, cases loaded."""
        if self.phase == "prepare":
            return int(next((v for k, v in self.losses.items() if k.endswith("_done")), 0))
        return self.iteration

    @property
    def total(self) -> int:
        """Iterations in all; for ``prepare`` events, cases to load."""
        if self.phase == "prepare":
            return int(next((v for k, v in self.losses.items() if k.endswith("_total")), 0))
        return self.total_iterations

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the JSON-lines log."""
        return dataclasses.asdict(self)


def prepare_event(what: str, done: int, total: int) -> TrainEvent:
    """Return a ``prepare`` event: ``done`` of ``total`` cases of ``what`` (train, val) loaded."""
    return TrainEvent(0, 0, 0, "prepare", {f"{what}_cases_done": done,
                                           f"{what}_cases_total": total})


@dataclass(frozen=True)
class FitResult:
    """What :func:`cavlog_core.training.fit` returns.

    Attributes
    ----------
    checkpoint_path : Path
        ``RUN_DIR/checkpoint.pt``.
    iterations : int
        Iterations completed.
    healthy_fc_satisfied : float or None
        Share of healthy validation slices with f_c(a) <= 0 (evaluation mode); None for methods
        without an attention constraint.
    thresholds : dict of str to float
        Healthy thresholds ``{"healthy_p85": ..., "healthy_p99": ...}``.
    history_path : Path
        ``RUN_DIR/log.jsonl``.
    """

    checkpoint_path: Path
    iterations: int
    healthy_fc_satisfied: float | None
    thresholds: dict[str, float]
    history_path: Path
