"""The training budget's planner: a pure function, nothing timed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from clothing_assets.ml.budget import (
    EpochPlan,
    budget_seconds,
    midway_epoch,
    over_budget,
    plan_epochs,
    replan_after_epoch,
    replan_epoch,
    replan_midway,
    resume_or_plan,
)


@pytest.mark.parametrize(
    ("budget", "per_epoch", "spent", "final", "epochs", "reason"),
    [
        (None, 100.0, 0.0, 0.0, 20, "no budget"),  # max_train_minutes 0/None: n_epochs
        (600.0, None, 5.0, 0.0, 20, "no throughput"),  # nothing could be timed
        (1.0, 100.0, 0.0, 0.0, 1, "too small for one epoch"),  # tiny: one epoch anyway
        (600.0, 100.0, 700.0, 0.0, 1, "too small for one epoch"),  # measuring ate it all
        (10_000.0, 100.0, 0.0, 0.0, 20, "fits all n_epochs"),  # huge: n_epochs, not more
        (600.0, 110.0, 10.0, 4.0, 5, "fits 5 of the 20"),  # (600 - 10 - 4) / 110 = 5.3
        (600.0, 100.0, 0.0, 0.0, 6, "fits 6 of the 20"),  # exactly 6 fit
    ],
)
def test_plan_epochs(budget, per_epoch, spent, final, epochs, reason):
    plan = plan_epochs(
        budget_seconds=budget, seconds_per_epoch_estimate=per_epoch, max_epochs=20,
        spent_seconds=spent, final_seconds=final, images_per_second=25.0,
    )  # fmt: skip
    assert plan.epochs == epochs
    assert plan.max_epochs == 20
    assert reason in plan.reason and reason in plan.describe()
    metadata = plan.metadata()
    assert metadata["planned_epochs"] == epochs
    assert metadata["train_budget_minutes"] == (round(budget / 60, 2) if budget else 0.0)


def test_a_plan_needs_at_least_one_epoch_to_choose_from():
    with pytest.raises(ValueError, match="n_epochs"):
        plan_epochs(budget_seconds=60.0, seconds_per_epoch_estimate=1.0, max_epochs=0)


@pytest.mark.parametrize(("minutes", "seconds"), [(0, None), (None, None), (-1, None), (10, 600)])
def test_budget_seconds(minutes, seconds):
    assert budget_seconds(minutes) == seconds


def test_resume_reuses_the_stored_plan_verbatim_and_measures_nothing():
    stored = plan_epochs(
        budget_seconds=600.0, seconds_per_epoch_estimate=110.0, max_epochs=20,
        spent_seconds=9.5, images_per_second=26.0,
    ).as_dict()  # fmt: skip

    def measure_again() -> EpochPlan:
        raise AssertionError("a resumed run must not re-plan")

    assert resume_or_plan(stored, measure_again) == EpochPlan.from_dict(stored)
    assert resume_or_plan(stored, measure_again).epochs == 5
    fresh = EpochPlan(epochs=3, max_epochs=20)
    assert resume_or_plan(None, lambda: fresh) is fresh


def test_a_plan_round_trips_through_plain_values():
    plan = plan_epochs(budget_seconds=60.0, seconds_per_epoch_estimate=7.0, max_epochs=20)
    data = plan.as_dict()
    assert all(isinstance(v, (int, float, str, type(None))) for v in data.values())
    assert EpochPlan.from_dict(data) == plan


@pytest.mark.parametrize(
    ("elapsed", "last", "done", "stop"),
    [
        (300.0, 30.0, 10, False),  # on pace
        (600.0, 30.0, 20, False),  # the next ends at 630 s, within 10 % of the 600 s allowed
        (640.0, 30.0, 21, True),  # slowed down: the next would end at 670 s > 660 s
        (700.0, 30.0, 25, False),  # the planned 25 are done: nothing left to stop
    ],
)
def test_a_run_that_falls_behind_its_plan_stops_before_overrunning(elapsed, last, done, stop):
    plan = plan_epochs(budget_seconds=610.0, seconds_per_epoch_estimate=24.0, max_epochs=100,
                       spent_seconds=10.0)  # fmt: skip
    assert plan.epochs == 25
    assert over_budget(plan, elapsed=elapsed, last_epoch_seconds=last, done=done) is stop


def test_a_run_without_a_budget_never_stops_early():
    plan = plan_epochs(budget_seconds=None, seconds_per_epoch_estimate=None, max_epochs=5)
    assert not over_budget(plan, elapsed=1e9, last_epoch_seconds=1e9, done=1)


def _measured(epochs_fit: int = 5) -> EpochPlan:
    # 610 s budget, 10 s measuring, 4 s last validation: (610 - 10 - 4) / 110 = 5.4 -> 5
    return plan_epochs(
        budget_seconds=610.0, seconds_per_epoch_estimate=596.0 / (epochs_fit + 0.4),
        max_epochs=20, spent_seconds=10.0, final_seconds=4.0, images_per_second=50.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("first", "epochs", "why"),
    [
        (80.0, 7, "7 of the 20"),  # faster than measured: 1 + (596 - 80) / 80 = 7.45 -> 7
        (150.0, 3, "3 of the 20"),  # slower: 1 + (596 - 150) / 150 = 3.97 -> 3
        (5.0, 20, "all n_epochs"),  # much faster: n_epochs is still the bound
        (900.0, 1, "1 of the 20"),  # the first epoch alone used the budget: stop after it
    ],
)
def test_the_first_epoch_re_plans_a_short_measured_plan(first, epochs, why):
    measured = _measured()
    assert measured.epochs == 5 and replan_epoch(measured) == 1  # under 15: from epoch 1
    plan = replan_after_epoch(measured, done=1, elapsed_seconds=first, epoch_seconds=first)
    assert plan.epochs == epochs and plan.measured_epochs == 5
    assert "re-planned after epoch 1" in plan.reason and why in plan.describe()
    assert plan.seconds_per_epoch == first
    assert plan.images_per_second == pytest.approx(50.0 * measured.seconds_per_epoch / first)
    assert plan.metadata()["measured_plan_epochs"] == 5
    assert plan.metadata()["planned_epochs"] == epochs
    # once only: a re-made plan is final, and it round-trips through a checkpoint
    assert replan_after_epoch(plan, done=1, elapsed_seconds=1.0, epoch_seconds=1.0) is plan
    assert EpochPlan.from_dict(plan.as_dict()) == plan


@pytest.mark.parametrize(
    ("first", "second", "epochs"),
    [
        # a slow first epoch (one-off costs), then the measured pace: the plan stands
        (26.5, 24.2, 29),  # 2 + (720 - 3 - 2 - 50.7) / 24.2 = 29.4 -> 29, as measured
        # a slow first epoch, then faster than measured, as on a real AVX2 EPYC:
        # 2 + (715 - 26.5 - 22.0) / 22.0 = 32.3 -> 32 (epoch 1 alone would have planned 26)
        (26.5, 22.0, 32),
        (10.0, 10.0, 71),  # much faster: 2 + (715 - 20) / 10 = 71.5 -> 71
        (400.0, 400.0, 2),  # the two epochs used the budget: stop after them
    ],
)
def test_a_long_plan_is_re_made_from_its_second_epoch(first, second, epochs):
    measured = plan_epochs(
        budget_seconds=720.0, seconds_per_epoch_estimate=24.2, max_epochs=100,
        spent_seconds=3.0, final_seconds=2.0, images_per_second=116.1,
    )  # fmt: skip
    assert measured.epochs == 29 and replan_epoch(measured) == 2
    plan = replan_after_epoch(
        measured, done=2, elapsed_seconds=first + second, epoch_seconds=second
    )
    assert plan.epochs == epochs
    if epochs == 29:
        assert plan is measured  # confirmed: nothing changes, nothing is marked re-made
        return
    assert "re-planned after epoch 2" in plan.reason and plan.measured_epochs == 29
    assert plan.seconds_per_epoch == second


@pytest.mark.parametrize(
    "plan",
    [
        _measured(),  # the first epoch took what the measurement said: nothing changes
        plan_epochs(budget_seconds=None, seconds_per_epoch_estimate=None, max_epochs=5),
        plan_epochs(budget_seconds=60.0, seconds_per_epoch_estimate=None, max_epochs=5),
    ],
    ids=["confirmed", "no budget", "nothing measured"],
)
def test_plans_the_first_epoch_cannot_improve_stay_as_they_are(plan):
    first = plan.seconds_per_epoch or 1.0
    assert replan_after_epoch(plan, done=1, elapsed_seconds=first, epoch_seconds=first) is plan
    assert plan.metadata()["measured_plan_epochs"] == plan.epochs


def _slow_second_epoch() -> EpochPlan:
    # as on a real AVX2 EPYC: 21 measured at 33.5 s, epoch 2 took 46.4 s (after
    # 40.6 s for epoch 1): 2 + (720 - 4 - 3 - 87.0) / 46.4 = 15.5 -> 15
    measured = plan_epochs(
        budget_seconds=720.0, seconds_per_epoch_estimate=33.5, max_epochs=100,
        spent_seconds=4.0, final_seconds=3.0, images_per_second=60.7,
    )  # fmt: skip
    assert measured.epochs == 21
    plan = replan_after_epoch(measured, done=2, elapsed_seconds=87.0, epoch_seconds=46.4)
    assert plan.epochs == 15
    return plan


@pytest.mark.parametrize(
    ("epochs", "after"),
    [(15, 7), (33, 16), (71, 35), (6, 3), (5, None), (1, None)],
)
def test_the_half_way_check_comes_after_epoch_3_at_the_earliest(epochs, after):
    plan = replace(_slow_second_epoch(), epochs=epochs)
    assert midway_epoch(plan) == after
    assert after is None or after > max(replan_epoch(plan), 2)  # past any early re-plan


@pytest.mark.parametrize(
    ("median", "epochs"),
    [
        # the epochs after the slow second ran at a median of 37 s: 7 + (713 - 280) / 37 = 18.7
        (37.0, 18),
        (40.0, 17),  # 7 + 433 / 40 = 17.8
        (62.0, 13),  # slower than planned: 7 + 433 / 62 = 13.98 -> 13 (fewer, decaying sooner)
        (1.0, 100),  # much faster: n_epochs is still the bound
    ],
)
def test_the_half_way_check_re_plans_from_the_median_epoch(median, epochs):
    plan = _slow_second_epoch()
    checked = replan_midway(
        plan, done=7, step=301, factor=0.62, elapsed_seconds=280.0,
        epoch_seconds=[46.4, median, median, median - 0.5, median + 9],
    )  # fmt: skip
    assert checked.epochs == epochs and checked.seconds_per_epoch == median
    assert (checked.decay_from_step, checked.decay_from_factor) == (301, 0.62)
    assert checked.measured_epochs == 21  # the timed steps' plan, kept for the metadata
    assert "checked after epoch 7" in checked.describe() and "re-planned after epoch 2" in (
        checked.describe()
    )
    assert checked.metadata()["planned_epochs"] == epochs
    assert EpochPlan.from_dict(checked.as_dict()) == checked
    # once only: a checked plan stands at any later check
    assert replan_midway(checked, done=9, step=387, factor=0.5, elapsed_seconds=10.0,
                         epoch_seconds=[1.0]) is checked  # fmt: skip


@pytest.mark.parametrize(
    ("plan", "times"),
    [
        (_slow_second_epoch(), [46.4, 50.0, 50.0, 51.0]),  # 7 + 433 / 50 = 15.7 -> 15 stands
        (
            plan_epochs(budget_seconds=None, seconds_per_epoch_estimate=None, max_epochs=8),
            [10.0, 10.0],
        ),
        (_slow_second_epoch(), []),  # no whole epoch after the first (all resumed part-way)
    ],
    ids=["confirmed", "no budget", "no epoch times"],
)
def test_plans_the_half_way_check_cannot_improve_stay_as_they_are(plan, times):
    assert replan_midway(plan, done=7, step=301, factor=0.62, elapsed_seconds=280.0,
                         epoch_seconds=times) is plan  # fmt: skip


def test_a_checkpoint_plan_from_before_re_planning_still_loads():
    """Checkpoints written before `final_seconds`, `measured_epochs` and the half-way check's
    fields existed resume."""
    old = {k: v for k, v in _measured().as_dict().items()
           if k not in ("final_seconds", "measured_epochs", "decay_from_step",
                        "decay_from_factor")}  # fmt: skip
    assert EpochPlan.from_dict(old).epochs == 5
