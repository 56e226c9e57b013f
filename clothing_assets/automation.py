"""Declarative automation: each asset's `AutomationCondition`, and the one sensor that
evaluates them.

- The catalogs follow their stage: a new stage data version (sensors.py observes the stages)
  syncs the catalog; never while it or its stage's observation is in progress.
- clothing_predictions follows clothing_test and champion_model: new catalog rows or a new
  champion are scored, once a champion_model materialization exists.
- trained_model retrains on `CLOTHING_RETRAIN_CRON`; champion_model decides on each new
  challenger.

A run the sensor launches that fails is retried by the Dagster instance (`run_retries` in
deploy/dagster.yaml) up to MAX_RUN_RETRIES times, from the failed step."""

import dagster as dg

MAX_RUN_RETRIES = 3
AUTOMATION_SENSOR = "clothing_automation"

# a failed run is tried again, from the step that failed, by the instance's run-retry daemon
RETRY_TAGS = {"dagster/max_retries": str(MAX_RUN_RETRIES), "dagster/retry_strategy": "FROM_FAILURE"}


def retrain_condition(cron: str) -> dg.AutomationCondition:
    """`on_cron(cron)` without its wait for every dependency to update after the tick: the
    train catalog is kept current by its own condition, so a quiet train stage must not
    postpone retraining. Never while the catalog (or training itself) is in progress."""
    idle = (
        ~dg.AutomationCondition.any_deps_missing() & ~dg.AutomationCondition.any_deps_in_progress()
    ).with_label("catalog present and not in progress")
    return (
        dg.AutomationCondition.on_cron(cron, "UTC").replace(
            f"all_deps_updated_since_cron({cron}, UTC)", idle
        )
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"retrain on {cron} (UTC)")


def sync_condition() -> dg.AutomationCondition:
    """`eager()`, and a first sync of a catalog this instance has no materialization of once
    its stage has been observed: `eager()` alone waits for the stage's next change when the
    first observation came before the sensor's first evaluation. The first sync is asked for
    once; a failed one is left to the run retries."""
    condition = dg.AutomationCondition
    first_sync = (
        condition.missing()
        & ~condition.execution_failed()
        & ~condition.any_deps_missing()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label("first sync")
    return (condition.eager() | first_sync).with_label("eager, or a first sync")


def automation_conditions(cron: str) -> dict[str, dg.AutomationCondition]:
    """Each automated asset's condition; the stages are observed, not materialized."""
    eager = dg.AutomationCondition.eager()
    return {
        "clothing_train": sync_condition(),
        "clothing_test": sync_condition(),
        "trained_model": retrain_condition(cron),
        "champion_model": eager,
        "clothing_predictions": eager,
    }


def build_automation_sensor(
    minimum_interval_seconds: int = 60,
) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates every asset's condition, at most every
    `minimum_interval_seconds`, and launches the runs they request."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=dg.AssetSelection.all(),
        run_tags=RETRY_TAGS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=minimum_interval_seconds,
        description="Syncs a catalog when its stage's data version changes, scores new rows "
        "and new champions, retrains on CLOTHING_RETRAIN_CRON; a failed run is retried up to "
        f"{MAX_RUN_RETRIES} times.",
    )
