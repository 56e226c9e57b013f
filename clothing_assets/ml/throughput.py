"""The budget's measurement: time a few training steps and a validation batch on a throwaway
copy of the model, so the run itself (weights, optimizer, random streams) is exactly what it
would have been without measuring; `budget.plan_epochs` then turns the figures into epochs."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from clothing_assets.ml.budget import EpochPlan, budget_seconds, plan_epochs, resume_or_plan
from clothing_assets.ml.engine import Recipe, evaluate, make_optimizer, train_one_epoch
from clothing_assets.ml.presets import ClassificationPresetEval
from clothing_assets.ml.settings import TrainSettings

WARMUP_STEPS = 1  # first-call costs (oneDNN primitive creation, allocator growth) not timed
TIMED_STEPS = 3


class _Enough(Exception):
    """Raised from the step callback once the timed steps are done."""


@dataclass(frozen=True)
class Throughput:
    """Measured figures: seconds per training step and per validation image."""

    seconds_per_step: float
    seconds_per_val_image: float
    batch_size: int

    @property
    def images_per_second(self) -> float:
        return self.batch_size / self.seconds_per_step


def _time_steps(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    recipe: Recipe,
    settings: TrainSettings,
) -> float | None:
    """Seconds per training step of a copy of `model`, over TIMED_STEPS after WARMUP_STEPS,
    with `recipe`'s batches unmixed (mixing costs little time)."""
    twin = copy.deepcopy(model)
    optimizer = make_optimizer(twin, settings.base_lr, settings.weight_decay, settings.optimizer)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    recipe = replace(recipe, mixup_alpha=0.0, cutmix_alpha=0.0)
    device = recipe.device
    marks: list[float] = []

    def on_step(_batch: int, _n: int) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())
        if len(marks) == WARMUP_STEPS + TIMED_STEPS:
            raise _Enough

    try:
        for epoch in range(WARMUP_STEPS + TIMED_STEPS):  # tiny sets need several epochs
            _, _, seen = train_one_epoch(
                twin, data, optimizer, recipe, epoch=epoch, scheduler=scheduler, on_step=on_step
            )
            if seen == 0:
                return None  # fewer than two images: nothing to time
    except _Enough:
        return (marks[-1] - marks[WARMUP_STEPS - 1]) / TIMED_STEPS
    return None


def measure_throughput(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    recipe: Recipe,
    *,
    settings: TrainSettings,
) -> Throughput | None:
    """Time training steps of `recipe` and one validation batch on copies; None with too few
    images.

    Every random stream is forked and restored (`torch.random.fork_rng`), and augmentation
    draws from per-step generators, so the run that follows is identical to an unmeasured one.
    """
    device = recipe.device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        per_step = _time_steps(model, train, recipe, settings)
        if per_step is None:
            return None
        per_val_image = 0.0
        n_val = min(len(val[0]), max(settings.batch_size, 128))
        if n_val:
            started = time.perf_counter()
            evaluate(
                copy.deepcopy(model), recipe.criterion, val[0][:n_val], val[1][:n_val],
                preset=ClassificationPresetEval(crop_size=settings.image_size),
                batch_size=n_val, device=device, amp_dtype=recipe.amp_dtype,
            )  # fmt: skip
            per_val_image = (time.perf_counter() - started) / n_val
    return Throughput(per_step, per_val_image, settings.batch_size)


def plan_training(
    stored: dict[str, Any] | None,
    settings: TrainSettings,
    *,
    steps_per_epoch: int,
    n_val: int,
    measure: Callable[[], Throughput | None],
) -> EpochPlan:
    """The run's plan: the checkpoint's (`stored`) verbatim, else `measure()` (a
    `measure_throughput` call) turned into epochs by `budget.plan_epochs`; no measurement at
    all without a budget."""

    def make_plan() -> EpochPlan:
        budget = budget_seconds(settings.max_train_minutes)
        if budget is None:
            return plan_epochs(
                budget_seconds=None, seconds_per_epoch_estimate=None, max_epochs=settings.n_epochs
            )
        started = time.perf_counter()
        figures: Throughput | None = measure()
        spent = time.perf_counter() - started
        if figures is None:
            return plan_epochs(
                budget_seconds=budget, seconds_per_epoch_estimate=None,
                max_epochs=settings.n_epochs, spent_seconds=spent,
            )  # fmt: skip
        val_pass = n_val * figures.seconds_per_val_image
        return plan_epochs(
            budget_seconds=budget,
            seconds_per_epoch_estimate=steps_per_epoch * figures.seconds_per_step + val_pass,
            max_epochs=settings.n_epochs, spent_seconds=spent, final_seconds=val_pass,
            images_per_second=figures.images_per_second,
        )  # fmt: skip

    return resume_or_plan(stored, make_plan)
