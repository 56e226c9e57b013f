"""Declarative automation: each asset's `AutomationCondition`, and the one sensor that
evaluates them.

- The catalogs follow their stage: a catalog is synced while its stage's latest recorded data
  version (sensors.py observes the stages) differs from the version its latest sync read;
  never while it or its stage's observation is in progress. A state, not an event: a file
  that lands while the catalog syncs is recorded during the run, and the finished sync, which
  did not see it, would count as having handled that event.
- clothing_predictions follows clothing_test and champion_model: new catalog rows or a new
  champion are scored, while champion_model's latest materialization recorded a champion (a
  scoring run without one could only fail).
- trained_model retrains on `CLOTHING_RETRAIN_CRON`, from the champion's weights unless
  `CLOTHING_RETRAIN_INIT` says otherwise (its runs carry FROM_AUTOMATION_TAG); champion_model
  decides on each new challenger.

Both state conditions read the instance's event log, so the sensor evaluates them in the code
location (`use_user_code_server`). A run the sensor launches that fails is retried by the
Dagster instance (`run_retries` in deploy/dagster.yaml) up to MAX_RUN_RETRIES times, from the
failed step."""

import dagster as dg
from dagster._core.definitions.data_version import extract_data_version_from_entry
from dagster._core.storage.tags import AUTOMATION_CONDITION_TAG

MAX_RUN_RETRIES = 3
AUTOMATION_SENSOR = "clothing_automation"

# the tag Dagster puts on every run the automation sensor launches
FROM_AUTOMATION_TAG = AUTOMATION_CONDITION_TAG

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


# champion_model's data version when the registry holds no champion (assets/model.py)
NO_CHAMPION = "none"


def _latest_record(
    instance: dg.DagsterInstance, key: dg.AssetKey, *, observed: bool
) -> dg.EventLogRecord | None:
    """`key`'s latest observation (`observed`) or materialization, None without one."""
    return instance.get_latest_data_version_record(key, is_source=observed)


def _version(record: dg.EventLogRecord | None) -> str | None:
    """The data version a record carries, None without a record or a version."""
    version = None if record is None else extract_data_version_from_entry(record.event_log_entry)
    return None if version is None else version.value


class StageVersionUnsynced(dg.AutomationCondition):
    """True for a catalog while its stage's latest recorded data version differs from the
    data version of the catalog's latest materialization (the stage version that sync read).
    False before the stage's first observation."""

    @property
    def name(self) -> str:
        return "stage_version_unsynced"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance
        [stage] = context.asset_graph.get(context.key).parent_keys
        observed = _version(_latest_record(instance, stage, observed=True))
        synced = _version(_latest_record(instance, context.key, observed=False))
        unsynced = observed is not None and observed != synced
        subset = context.candidate_subset if unsynced else context.get_empty_subset()
        return dg.AutomationResult(context, subset)


class ChampionRecorded(dg.AutomationCondition):
    """True while champion_model's latest materialization recorded a champion (its data
    version is a model version, not NO_CHAMPION)."""

    @property
    def name(self) -> str:
        return "champion_recorded"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        instance = context.asset_graph_view.instance
        record = _latest_record(instance, dg.AssetKey("champion_model"), observed=False)
        recorded = record is not None and _version(record) != NO_CHAMPION
        subset = context.candidate_subset if recorded else context.get_empty_subset()
        return dg.AutomationResult(context, subset)


def sync_condition() -> dg.AutomationCondition:
    """A sync while the stage's recorded version is not the one the catalog last synced, and
    neither the catalog nor its stage's observation is in progress. After a failed sync the
    next request waits for the stage's next version (`eager()`): the run retries try the
    failed one again."""
    condition = dg.AutomationCondition
    unsynced = (
        StageVersionUnsynced()
        & ~condition.execution_failed()
        & ~condition.any_deps_in_progress()
        & ~condition.in_progress()
    ).with_label("stage version not synced")
    return (unsynced | condition.eager()).with_label("stage version not synced, or eager")


def scoring_condition() -> dg.AutomationCondition:
    """`eager()` while a champion is recorded."""
    return (dg.AutomationCondition.eager() & ChampionRecorded()).with_label(
        "eager, with a champion"
    )


def automation_conditions(cron: str) -> dict[str, dg.AutomationCondition]:
    """Each automated asset's condition; the stages are observed, not materialized."""
    eager = dg.AutomationCondition.eager()
    return {
        "clothing_train": sync_condition(),
        "clothing_test": sync_condition(),
        "trained_model": retrain_condition(cron),
        "champion_model": eager,
        "clothing_predictions": scoring_condition(),
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
        use_user_code_server=True,
        description="Syncs a catalog when its stage's data version changes, scores new rows "
        "and new champions, retrains on CLOTHING_RETRAIN_CRON; a failed run is retried up to "
        f"{MAX_RUN_RETRIES} times.",
    )
