"""The interface every anomaly-segmentation method implements (the paper's and the baselines).

A method owns its modules, its training step (losses, backward and optimiser steps, so GANs can
alternate) and its anomaly map. :func:`cavlog_core.training.fit` owns everything else: data,
devices, mixed precision, DDP, logging and checkpoints.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import RunConfig


@dataclass(frozen=True)
class Batch:
    """One training batch on the target device.

    Attributes
    ----------
    images : (B, 1, R, R) Tensor
        Normalised FLAIR slices in [0, 1].
    brain : (B, 1, R, R) Tensor
        Boolean brain mask.
    """

    images: Tensor
    brain: Tensor


class Method(abc.ABC):
    """Base class; subclasses set ``name`` and ``description`` and implement the abstract methods.

    Subclasses defined in any module of :mod:`cavlog_core.methods` are discovered automatically.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    #: False for methods with nothing to learn (FLAIR thresholding).
    trainable: ClassVar[bool] = True

    def __init__(self, config: RunConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def build(self) -> nn.ModuleDict:
        """Create the method's modules; the key ``"model"`` holds the network used at inference."""

    def optimizers(self, modules: nn.ModuleDict) -> dict[str, torch.optim.Optimizer]:
        """Optimisers by name; default: one Adam over all parameters at ``train.lr``."""
        return {"model": torch.optim.Adam(modules.parameters(), lr=self.config.train.lr)}

    @abc.abstractmethod
    def training_step(
        self,
        modules: nn.ModuleDict,
        optimizers: dict[str, torch.optim.Optimizer],
        batch: Batch,
        iteration: int,
    ) -> dict[str, float]:
        """Run one optimisation step (zero_grad, losses, backward, step) and return scalar logs.

        The returned dict has at least ``"loss"``; attention methods also report ``"mean_fc"``
        (mean of f_c(a) over the batch) and ``"barrier_active"`` (0/1).
        """

    @abc.abstractmethod
    def anomaly_maps(self, modules: nn.ModuleDict, images: Tensor, brain: Tensor) -> Tensor:
        """Raw anomaly maps ``(B, 1, R, R)``, higher = more anomalous, for ``(B, 1, R, R)`` inputs.

        Normalisation inside the brain and thresholding happen in :mod:`cavlog_core.inference`.
        """
