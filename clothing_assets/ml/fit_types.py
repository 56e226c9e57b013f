"""What a `fit` run reports and is told: each epoch's figures (`EpochStats`), the run's
result (`FitResult`) and where it checkpoints and whom it tells how it goes (`FitHooks`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from clothing_assets.ml.budget import EpochPlan

# the logger of the fit run that `FitHooks.on_warning` tells by default
log = logging.getLogger("clothing_assets.ml.train")


@dataclass
class EpochStats:
    """One epoch's training and validation figures."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    images: int
    seconds: float
    # False for an epoch resumed part-way: its seconds are not an epoch's time
    whole: bool = True

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FitResult:
    """What `fit` hands back: the kept weights and the history behind them."""

    state_dict: dict[str, torch.Tensor]
    history: list[EpochStats]
    best_epoch: int
    device: str
    amp_dtype: str
    train_seconds: float
    steps: int
    resumed_from_step: int = 0
    val_predictions: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    plan: EpochPlan | None = None
    cpu_kind: str = ""
    crop_scale_min: float = 0.0  # the smallest training crop the run used
    frozen_parameters: int = 0  # parameters kept at their starting weights (`frozen_blocks`)

    @property
    def best_val_accuracy(self) -> float | None:
        """The kept epoch's validation accuracy; None without validation images."""
        best = next((h for h in self.history if h.epoch == self.best_epoch), None)
        return None if best is None else best.val_acc


@dataclass(frozen=True)
class FitHooks:
    """Where a `fit` run keeps its checkpoint and whom it tells how it goes: `on_epoch(stats,
    eta_seconds)` after each epoch, `progress(images)` after each step, `on_plan(plan)` when
    the epochs are planned or re-planned, `on_warning(message)` for what does not stop it."""

    checkpoint_path: Path | None = None
    fingerprint: str = ""
    on_epoch: Callable[[EpochStats, float], None] | None = None
    progress: Callable[[int], None] | None = None
    on_warning: Callable[[str], None] = log.warning
    on_plan: Callable[[EpochPlan], None] | None = None
