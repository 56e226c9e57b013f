"""The training time budget: how many epochs fit in `max_train_minutes`, planned from a
throughput measurement, re-made from an early epoch's time and checked once more half way
from the median epoch (the learning-rate schedule is sized to the plan, the checkpoint keeps
it, a resumed run reuses it).

Pure and torch-free: the measurement itself is `throughput.measure_throughput`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class EpochPlan:
    """How many epochs a run trains, and why."""

    epochs: int
    max_epochs: int
    budget_seconds: float | None = None
    seconds_per_epoch: float | None = None
    images_per_second: float | None = None
    spent_seconds: float = 0.0
    reason: str = "no budget: n_epochs"
    final_seconds: float = 0.0
    # the epochs the measurement planned, when an early epoch's time re-planned them
    measured_epochs: int | None = None
    # set when the half-way check re-made the plan: the step from which the LR decays from
    # `decay_from_factor` (the multiplier it had reached) to 0 over the steps left
    decay_from_step: int | None = None
    decay_from_factor: float = 1.0

    def describe(self) -> str:
        """One log line: the choice and the figures behind it."""
        if self.budget_seconds is None:
            return f"training {self.epochs} epochs ({self.reason})"
        rate = f"{self.images_per_second:.1f} img/s, " if self.images_per_second else ""
        per_epoch = f"~{self.seconds_per_epoch:.0f}s/epoch" if self.seconds_per_epoch else ""
        return (
            f"training {self.epochs} of at most {self.max_epochs} epochs in a "
            f"{self.budget_seconds / 60:g}-minute budget ({rate}{per_epoch}, "
            f"{self.spent_seconds:.0f}s measuring): {self.reason}"
        )

    def metadata(self) -> dict[str, float | int | str]:
        """Plain values for the asset's metadata (NaN where there was no measurement)."""
        nan = float("nan")
        return {
            "train_budget_minutes": round(self.budget_seconds / 60, 2)
            if self.budget_seconds
            else 0.0,
            "planned_epochs": self.epochs,
            # what the timed steps alone planned, before an early epoch re-planned it
            "measured_plan_epochs": self.measured_epochs or self.epochs,
            "epoch_plan": self.describe(),
            "measured_train_images_per_second": round(self.images_per_second, 1)
            if self.images_per_second
            else nan,
            "estimated_seconds_per_epoch": round(self.seconds_per_epoch, 1)
            if self.seconds_per_epoch
            else nan,
        }

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for the checkpoint (loadable with `weights_only=True`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EpochPlan:
        """The plan a checkpoint stored, as it was."""
        return cls(**data)


def plan_epochs(
    *,
    budget_seconds: float | None,
    seconds_per_epoch_estimate: float | None,
    max_epochs: int,
    spent_seconds: float = 0.0,
    final_seconds: float = 0.0,
    images_per_second: float | None = None,
) -> EpochPlan:
    """The whole epochs that fit in `budget_seconds` after `spent_seconds` (the measurement)
    and `final_seconds` (the last validation pass), at `seconds_per_epoch_estimate` each
    (training and validation), between 1 and `max_epochs` (`n_epochs`: an upper bound).

    No budget (None or <= 0) or no estimate: `max_epochs`. A budget too small for one epoch
    still trains one, and the plan says so.
    """
    if max_epochs < 1:
        raise ValueError(f"n_epochs must be at least 1, got {max_epochs}")
    if not budget_seconds or budget_seconds <= 0:
        return EpochPlan(epochs=max_epochs, max_epochs=max_epochs)
    if not seconds_per_epoch_estimate or seconds_per_epoch_estimate <= 0:
        return EpochPlan(
            max_epochs, max_epochs, budget_seconds, spent_seconds=spent_seconds,
            reason="no throughput measured (too few training images): n_epochs",
        )  # fmt: skip
    left = budget_seconds - spent_seconds - final_seconds
    fit = math.floor(max(0.0, left) / seconds_per_epoch_estimate)
    if fit < 1:
        epochs, reason = 1, "the budget is too small for one epoch; training one anyway"
    elif fit >= max_epochs:
        epochs, reason = max_epochs, "the budget fits all n_epochs"
    else:
        epochs, reason = fit, f"the budget fits {fit} of the {max_epochs} n_epochs"
    return EpochPlan(
        epochs=epochs, max_epochs=max_epochs, budget_seconds=budget_seconds,
        seconds_per_epoch=seconds_per_epoch_estimate, images_per_second=images_per_second,
        spent_seconds=spent_seconds, reason=reason, final_seconds=final_seconds,
    )  # fmt: skip


# the epoch whose time re-plans a measured plan of at least REPLAN_MIN_EPOCHS: the first epoch
# can carry one-off costs (in one of two runs on a real AVX2 EPYC it took 26.5 s against 22 s
# for each later one, BENCHMARKS.md, Training budget), the second runs at the steady pace.
# Shorter plans re-plan from epoch 1, within the warmup, where the re-sized schedule leaves the
# LR so far unchanged; after epoch 2 of 15 or more, a re-plan by 25 % either way moves the LR
# by under 2 %.
REPLAN_EPOCH = 2
REPLAN_MIN_EPOCHS = 15


def replan_epoch(plan: EpochPlan) -> int:
    """After which epoch (1-based) a fresh run re-plans `plan` from that epoch's time."""
    return REPLAN_EPOCH if plan.epochs >= REPLAN_MIN_EPOCHS else 1


def replan_after_epoch(
    plan: EpochPlan, *, done: int, elapsed_seconds: float, epoch_seconds: float
) -> EpochPlan:
    """The plan re-made from the time of epoch `done` (training and validation), which is a
    better estimate than a few timed steps: those erred by 25 % either way on two machines
    (BENCHMARKS.md, Training budget). The `done` epochs, which took `elapsed_seconds` in all,
    count as done; the rest of the budget, less the measurement and the last validation pass,
    is divided by `epoch_seconds`, between `done` and `max_epochs` in all. Plans without a
    budget or a measurement, plans already re-made, and plans whose epochs the epoch confirms are
    returned as they are."""
    if (
        plan.budget_seconds is None
        or plan.seconds_per_epoch is None
        or plan.measured_epochs is not None
        or epoch_seconds <= 0
    ):
        return plan
    left = plan.budget_seconds - plan.spent_seconds - plan.final_seconds - elapsed_seconds
    epochs = min(plan.max_epochs, done + math.floor(max(0.0, left) / epoch_seconds))
    if epochs == plan.epochs:  # the measurement was right enough: nothing changes
        return plan
    fits = "all" if epochs == plan.max_epochs else f"{epochs} of the {plan.max_epochs}"
    reason = (
        f"re-planned after epoch {done} ({epoch_seconds:.1f}s against "
        f"{plan.seconds_per_epoch:.1f}s measured, which planned {plan.epochs}): the budget fits "
        f"{fits} n_epochs"
    )
    images_per_second = plan.images_per_second
    if images_per_second:  # the same images in the epoch's time
        images_per_second *= plan.seconds_per_epoch / epoch_seconds
    return replace(
        plan, epochs=epochs, seconds_per_epoch=epoch_seconds,
        images_per_second=images_per_second, reason=reason, measured_epochs=plan.epochs,
    )  # fmt: skip


# the half-way check: plans of at least MIDWAY_MIN_EPOCHS are checked after epoch
# epochs // 2 (so after epoch 3 at the earliest, past any early re-plan) against the median time
# of the whole epochs so far. One early epoch can mislead: on a real AVX2 EPYC epoch 2 took
# 46.4 s and re-planned 21 epochs to 15, which then ran at a median of about 37 s and left
# 2 min 40 s of the 12 unused (BENCHMARKS.md, Training budget).
MIDWAY_MIN_EPOCHS = 6


def midway_epoch(plan: EpochPlan) -> int | None:
    """After which epoch (1-based) a budgeted run checks its plan half way; None: never."""
    if plan.budget_seconds is None or plan.epochs < MIDWAY_MIN_EPOCHS:
        return None
    return plan.epochs // 2


def replan_midway(
    plan: EpochPlan,
    *,
    done: int,
    step: int,
    factor: float,
    elapsed_seconds: float,
    epoch_seconds: list[float],
) -> EpochPlan:
    """The plan checked after epoch `done` (at optimizer step `step`, the LR multiplier having
    reached `factor`) against the median of `epoch_seconds`, the times of the whole epochs
    after the first: the rest of the budget, less the measurement, the last validation pass
    and the `elapsed_seconds` of the `done` epochs, is divided by that median, between `done`
    and `max_epochs` in all. A changed plan decays the LR from `factor` at `step` to 0 at its
    last step, so the LR is continuous; a plan that stands, one checked already, or one
    without a budget or epoch times is returned as it is."""
    if plan.budget_seconds is None or plan.decay_from_step is not None or not epoch_seconds:
        return plan
    pace = statistics.median(epoch_seconds)
    if pace <= 0:
        return plan
    left = plan.budget_seconds - plan.spent_seconds - plan.final_seconds - elapsed_seconds
    epochs = min(plan.max_epochs, done + math.floor(max(0.0, left) / pace))
    if epochs == plan.epochs:
        return plan
    reason = (
        f"{plan.reason}; checked after epoch {done} at the median epoch's {pace:.1f}s: "
        f"{epochs} epochs"
    )
    images_per_second = plan.images_per_second
    if images_per_second and plan.seconds_per_epoch:
        images_per_second *= plan.seconds_per_epoch / pace
    return replace(
        plan, epochs=epochs, seconds_per_epoch=pace, images_per_second=images_per_second,
        reason=reason, measured_epochs=plan.measured_epochs or plan.epochs,
        decay_from_step=step, decay_from_factor=factor,
    )  # fmt: skip


# how far past the budget's training time the next epoch may be projected to end before the
# run stops early: a machine can slow down after the plan is measured (an emulated AVX2 run fell
# from 122 to 78 img/s with nothing else running and would have ended 2 minutes late,
# BENCHMARKS.md, Training budget)
OVERRUN = 1.1


def over_budget(plan: EpochPlan, *, elapsed: float, last_epoch_seconds: float, done: int) -> bool:
    """Whether a budgeted run should stop after its `done`-th epoch: another epoch at the pace
    of the last one (`last_epoch_seconds`) would end more than OVERRUN past the training time
    the plan allowed (the budget less its measurement), `elapsed` seconds having gone. Never
    without a budget, nor once the planned epochs are done."""
    if plan.budget_seconds is None or done >= plan.epochs:
        return False
    allowed = plan.budget_seconds - plan.spent_seconds
    return elapsed + last_epoch_seconds > allowed * OVERRUN


def resume_or_plan(stored: dict[str, Any] | None, make_plan: Callable[[], EpochPlan]) -> EpochPlan:
    """A resumed run's plan is the one its checkpoint stored, verbatim (never re-measured:
    the schedule it resumes was sized to it); otherwise `make_plan()` measures and plans."""
    if stored is not None:
        return EpochPlan.from_dict(stored)
    return make_plan()


def budget_seconds(max_train_minutes: float | None) -> float | None:
    """`max_train_minutes` in seconds; 0 or None: no budget."""
    return max_train_minutes * 60.0 if max_train_minutes and max_train_minutes > 0 else None
