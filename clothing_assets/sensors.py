"""One sensor per stage: a cheap look at the stage (names, sizes, timestamps, ETags; never image
bytes) compared with the last one through a cursor; a change requests a sync (and, for the test
stage, scoring). The look is the warehouse's (`Warehouse.stage_state`): DuckDB mode lists the
stage's location with fsspec; Snowflake mode refreshes the stage's directory table and reads a
summary of it, never the bucket.

The test-stage sensor also rescores when nothing changed but clothing_predictions was last
materialized longer ago than `rescore_after`: that run scores whatever is left unscored (and
starts no cluster when nothing is), so its freshness policy fails only when scoring itself
stops, not when the stage is merely quiet."""

import json
import time
from datetime import timedelta

import dagster as dg

from clothing_assets.freshness import window_label
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageLocationError, StageResource

MAX_SENSOR_RETRIES = 3


def _retry_of_failed_run(
    context: dg.SensorEvaluationContext, previous: dict
) -> tuple[str, str] | None:
    """(run key, change) to request the last change's sync again when the run requested for it
    failed (the cursor moved on when it was requested), at most MAX_SENSOR_RETRIES times."""
    key, attempt = previous.get("run_key"), previous.get("attempt", 0)
    if not key or attempt >= MAX_SENSOR_RETRIES:
        return None
    runs = context.instance.get_runs(filters=dg.RunsFilter(tags={"dagster/run_key": key}), limit=1)
    if not runs or runs[0].status != dg.DagsterRunStatus.FAILURE:
        return None
    base = key.split("#", 1)[0]
    return f"{base}#retry{attempt + 1}", f"retry {attempt + 1} of a failed sync"


def _describe(previous: dict | None, files: int) -> str:
    if previous is None:
        return f"first look: {files} files"
    delta = files - previous["files"]
    return f"{files} files ({delta:+d})" if delta else f"{files} files, some changed"


def _rescore_if_stale(
    context: dg.SensorEvaluationContext,
    stage: StageResource,
    warehouse: Warehouse,
    score_assets: list[str],
    rescore_after: timedelta | None,
) -> dg.RunRequest | None:
    """A run of `score_assets` when their latest materialization is older than `rescore_after`
    (or there is none) and there is a champion to score with; keyed by the period, so one
    run per period at most, and a failed one is tried again in the next period."""
    if not score_assets or rescore_after is None:
        return None
    period = rescore_after.total_seconds()
    now = time.time()
    latest = context.instance.get_latest_materialization_event(dg.AssetKey(score_assets[-1]))
    if latest is not None and now - latest.timestamp < period:
        return None
    if not warehouse.champion():
        return None
    age = "never" if latest is None else f"{(now - latest.timestamp) / 3600:.1f} h ago"
    context.log.info(f"{score_assets[-1]} last materialized {age}; requesting a rescoring")
    return dg.RunRequest(
        run_key=f"{stage.name}:rescore:{int(now // period)}",
        asset_selection=[dg.AssetKey(a) for a in score_assets],
        tags={"clothing/stage": stage.name, "clothing/change": f"rescore, last scored {age}"},
    )


def evaluate_stage(
    context: dg.SensorEvaluationContext,
    stage: StageResource,
    warehouse: Warehouse,
    *,
    sync_assets: list[str],
    score_assets: list[str],
    rescore_after: timedelta | None = None,
) -> dg.RunRequest | dg.SkipReason:
    """One tick: look at the stage through the warehouse, compare with the cursor, request
    `sync_assets` (plus `score_assets` once there is a champion model) when anything changed;
    when nothing did, `score_assets` alone once they are older than `rescore_after`."""
    try:
        state = warehouse.stage_state(stage)
    except StageLocationError as exc:
        return dg.SkipReason(str(exc))
    digest, files = state.key, state.files
    previous = json.loads(context.cursor) if context.cursor else None
    run_key = f"{stage.name}:{(previous or {}).get('digest', '')[:16]}>{digest[:16]}"
    if previous is not None and previous["digest"] == digest:
        retry = _retry_of_failed_run(context, previous)
        if retry is None:
            stale = _rescore_if_stale(context, stage, warehouse, score_assets, rescore_after)
            return stale or dg.SkipReason(f"no change in stage {stage.name} ({files} files)")
        run_key, change = retry
    else:
        change = _describe(previous, files)
    context.update_cursor(
        json.dumps({"digest": digest, "files": files, "run_key": run_key,
                    "attempt": (previous or {}).get("attempt", 0) + 1 if "retry" in change else 0})
    )  # fmt: skip
    table = sync_assets[-1]
    if previous is None and warehouse.catalog_holds(table, state):
        # a fresh instance (or a reset sensor): nothing to do if the catalog is current
        return dg.SkipReason(f"first look: {files} files, all already in {table}")
    assets = sync_assets + (score_assets if score_assets and warehouse.champion() else [])
    context.log.info(f"stage {stage.name}: {change}; requesting {', '.join(assets)}")
    return dg.RunRequest(
        # keyed by the transition, so a retried tick never launches the same run twice
        run_key=run_key,
        asset_selection=[dg.AssetKey(a) for a in assets],
        tags={"clothing/stage": stage.name, "clothing/change": change},
    )


TRAIN_SYNC = ["clothing_dataset_train", "clothing_train"]
TEST_SYNC = ["clothing_dataset", "clothing_test"]
TEST_SCORE = ["clothing_predictions"]


def build_sensors(
    minimum_interval_seconds: int = 60, *, rescore_after: timedelta | None = None
) -> list[dg.SensorDefinition]:
    """The train-stage and test-stage sensors, ticking at most every `minimum_interval_seconds`;
    the test-stage one also rescores predictions older than `rescore_after` (None: never)."""

    @dg.sensor(
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=TRAIN_SYNC,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Syncs clothing_train when files in the train stage change.",
    )
    def clothing_train_stage_sensor(
        context: dg.SensorEvaluationContext,
        train_stage: StageResource,
        warehouse: Warehouse,
    ):
        return evaluate_stage(
            context, train_stage, warehouse, sync_assets=TRAIN_SYNC, score_assets=[]
        )

    test_description = "Syncs clothing_test and scores its new rows when the test stage changes"
    if rescore_after:
        test_description += f"; rescores once the predictions are {window_label(rescore_after)} old"

    @dg.sensor(
        minimum_interval_seconds=minimum_interval_seconds,
        asset_selection=TEST_SYNC + TEST_SCORE,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=test_description,
    )
    def clothing_test_stage_sensor(
        context: dg.SensorEvaluationContext,
        test_stage: StageResource,
        warehouse: Warehouse,
    ):
        return evaluate_stage(
            context, test_stage, warehouse, sync_assets=TEST_SYNC, score_assets=TEST_SCORE,
            rescore_after=rescore_after,
        )  # fmt: skip

    return [clothing_train_stage_sensor, clothing_test_stage_sensor]
