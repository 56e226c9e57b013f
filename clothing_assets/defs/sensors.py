"""The stage observer: every `CLOTHING_SENSOR_INTERVAL_SECONDS` it observes both stages
(assets/stages.py: a cheap look through the warehouse, never image bytes) and records an
observation with the stage's new data version only when that version changed. Automation
(automation.py) reacts to the new version; an unchanged stage records nothing and launches
nothing. `sensors()` gives the location this observer and the automation sensor.

It is a sensor rather than an automation condition on the stages because a condition can
only observe by launching a run: one run per stage per interval, each importing the code
location, on a stage that has not changed.

It also rescores when clothing_predictions was last materialized longer ago than
`rescore_after` and there is a champion: that run scores whatever is left unscored (and
starts no cluster when nothing is), so the predictions' freshness policy fails only when
scoring itself stops, not when the stage is merely quiet. Whether a champion exists is a
question for the model registry, which no automation condition can ask."""

import time
from datetime import timedelta

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from clothing_assets.defs.assets.stages import observe_stage
from clothing_assets.defs.automation import RETRY_TAGS, build_automation_sensor
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
from clothing_assets.freshness import freshness_windows, window_label
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.settings import setting
from clothing_assets.stage import StageLocationError, StageResource

OBSERVER = "clothing_stage_observer"
SCORE_ASSET = "clothing_predictions"


def recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The data version of the latest observation of `key` (in a run or by the observer)."""
    records = instance.fetch_observations(key, limit=1).records
    if not records or records[0].asset_observation is None:
        return None
    return records[0].asset_observation.tags.get(DATA_VERSION_TAG)


def observe(
    context: dg.SensorEvaluationContext, warehouse: Warehouse, asset: str, stage: StageResource
) -> dg.AssetObservation | None:
    """An observation of the stage asset `asset` (`stage`) carrying its data version when that
    version differs from the recorded one; None when it does not, or when the stage cannot be
    listed (logged)."""
    try:
        state, metadata = observe_stage(warehouse, stage)
    except StageLocationError as exc:
        context.log.warning(f"stage {stage.name} not observed: {exc}")
        return None
    key = dg.AssetKey(asset)
    previous = recorded_version(context.instance, key)
    if previous == state.key:
        return None
    context.log.info(
        f"stage {stage.name}: new data version {state.key[:16]} ({state.files} files)"
        + (f", was {previous[:16]}" if previous else "")
    )
    return dg.AssetObservation(key, metadata=metadata, tags={DATA_VERSION_TAG: state.key})


def rescore_if_stale(
    context: dg.SensorEvaluationContext, warehouse: Warehouse, rescore_after: timedelta | None
) -> dg.RunRequest | None:
    """A run of clothing_predictions when its latest materialization is older than
    `rescore_after` (or there is none) and there is a champion to score with; keyed by the
    period, so one run per period at most."""
    if rescore_after is None:
        return None
    period = rescore_after.total_seconds()
    now = time.time()
    latest = context.instance.get_latest_materialization_event(dg.AssetKey(SCORE_ASSET))
    if latest is not None and now - latest.timestamp < period:
        return None
    if not warehouse.champion():
        return None
    age = "never" if latest is None else f"{(now - latest.timestamp) / 3600:.1f} h ago"
    context.log.info(f"{SCORE_ASSET} last materialized {age}; requesting a rescoring")
    return dg.RunRequest(
        run_key=f"{SCORE_ASSET}:rescore:{int(now // period)}",
        asset_selection=[dg.AssetKey(SCORE_ASSET)],
        tags={**RETRY_TAGS, "clothing/change": f"rescore, last scored {age}"},
    )


def build_stage_observer(
    minimum_interval_seconds: int = 60, *, rescore_after: timedelta | None = None
) -> dg.SensorDefinition:
    """The stage observer, ticking at most every `minimum_interval_seconds`; it also rescores
    predictions older than `rescore_after` (None: never)."""
    description = "Observes both stages; records a new data version when files change"
    if rescore_after:
        description += f"; rescores once the predictions are {window_label(rescore_after)} old"

    @dg.sensor(
        name=OBSERVER,
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=[SCORE_ASSET],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=description,
    )
    def clothing_stage_observer(
        context: dg.SensorEvaluationContext,
        warehouse: Warehouse,
        train_stage: StageResource,
        test_stage: StageResource,
    ):
        stages = {TRAIN_STAGE: train_stage, TEST_STAGE: test_stage}
        events = [e for a, s in stages.items() if (e := observe(context, warehouse, a, s))]
        rescore = rescore_if_stale(context, warehouse, rescore_after)
        if not events and rescore is None:
            return dg.SkipReason("no stage changed")
        return dg.SensorResult(run_requests=[rescore] if rescore else [], asset_events=events)

    return clothing_stage_observer


@dg.definitions
def sensors() -> dg.Definitions:
    """The stage observer and the automation sensor, both on CLOTHING_SENSOR_INTERVAL_SECONDS,
    read when the location loads."""
    interval = setting("CLOTHING_SENSOR_INTERVAL_SECONDS")
    # rescoring at half the freshness window leaves a failed rescoring run one more try
    # before the policy fails
    rescore_after = freshness_windows()["clothing_predictions"] / 2
    return dg.Definitions(
        sensors=[
            build_stage_observer(interval, rescore_after=rescore_after),
            build_automation_sensor(interval),
        ]
    )
