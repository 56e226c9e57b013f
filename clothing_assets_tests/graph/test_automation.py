"""Sensors, the retraining schedule and the promotion gate."""

from __future__ import annotations

import dagster as dg
import pytest

from clothing_assets.asset_checks import total_variation
from clothing_assets.definitions import all_assets, all_checks, defs
from clothing_assets.environment import resources_for
from clothing_assets.schedules import DEFAULT_RETRAIN_CRON
from clothing_assets.sensors import build_sensors
from clothing_assets_tests.support import (
    COLOURS,
    TINY_RUN_CONFIG,
    champion_version,
    materialize,
    read_table,
    register_model,
    sensor_tick,
    write_image,
)

_tick = sensor_tick


def _keys(request: dg.RunRequest) -> set[str]:
    return {k.to_user_string() for k in request.asset_selection}


def test_stage_sensor_requests_runs_on_change_and_skips_otherwise(local_env):
    train_sensor, test_sensor = build_sensors(minimum_interval_seconds=30)
    assert train_sensor.minimum_interval_seconds == 30
    with dg.instance_for_test() as instance:
        first, cursor = _tick(train_sensor, None, instance)
        assert isinstance(first, dg.RunRequest)
        assert _keys(first) == {"clothing_dataset_train", "clothing_train"}

        second, cursor = _tick(train_sensor, cursor, instance)
        assert isinstance(second, dg.SkipReason) and "no change" in second.skip_message

        write_image(local_env.train / "hat" / "added.jpg", COLOURS["hat"], seed=3)
        added, cursor = _tick(train_sensor, cursor, instance)
        assert isinstance(added, dg.RunRequest) and "(+1)" in added.tags["clothing/change"]
        assert added.run_key != first.run_key

        (local_env.train / "hat" / "added.jpg").unlink()
        removed, cursor = _tick(train_sensor, cursor, instance)
        assert isinstance(removed, dg.RunRequest) and "(-1)" in removed.tags["clothing/change"]

        # the test-stage sensor scores as well, once there is a champion
        request, _ = _tick(test_sensor, None, instance)
        assert _keys(request) == {"clothing_dataset", "clothing_test"}
        register_model(local_env, b"a champion's bytes")
        request, _ = _tick(test_sensor, None, instance)
        assert _keys(request) == {"clothing_dataset", "clothing_test", "clothing_predictions"}


def test_a_fresh_sensor_launches_no_run_when_the_catalog_already_matches(local_env):
    assert materialize(["clothing_dataset", "clothing_test"], None).success
    _, test_sensor = build_sensors()
    with dg.instance_for_test() as instance:
        first, cursor = _tick(test_sensor, None, instance)
        assert isinstance(first, dg.SkipReason) and "already in clothing_test" in (
            first.skip_message
        )
        write_image(local_env.test / "hat" / "new.jpg", COLOURS["hat"], seed=8)
        changed, _ = _tick(test_sensor, cursor, instance)
        assert isinstance(changed, dg.RunRequest)


def test_a_change_whose_run_failed_is_requested_again(local_env, monkeypatch):
    """The cursor moves on when a run is requested; if that run fails, the next ticks request
    the same change again (a bounded number of times) instead of skipping it for ever."""
    train_sensor, _ = build_sensors()
    with dg.instance_for_test() as instance:
        request, cursor = _tick(train_sensor, None, instance)
        assert isinstance(request, dg.RunRequest)
        monkeypatch.setenv("CLOTHING_DUCKDB_PATH", str(local_env.root))  # a folder: fails
        failed = dg.materialize(
            all_assets(), resources=resources_for(), selection=request.asset_selection,
            instance=instance, tags={"dagster/run_key": request.run_key}, raise_on_error=False,
        )  # fmt: skip
        assert not failed.success
        again, cursor = _tick(train_sensor, cursor, instance)
        assert isinstance(again, dg.RunRequest) and "retry 1" in again.tags["clothing/change"]
        assert again.run_key != request.run_key
        monkeypatch.setenv("CLOTHING_DUCKDB_PATH", str(local_env.duckdb))
        done = dg.materialize(
            all_assets(), resources=resources_for(), selection=again.asset_selection,
            instance=instance, tags={"dagster/run_key": again.run_key},
        )  # fmt: skip
        assert done.success
        quiet, _ = _tick(train_sensor, cursor, instance)
        assert isinstance(quiet, dg.SkipReason) and "no change" in quiet.skip_message


def test_sensor_skips_with_the_reason_when_the_stage_is_missing(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", str(local_env.root / "gone"))
    _, test_sensor = build_sensors()
    with dg.instance_for_test() as instance:
        result, cursor = _tick(test_sensor, None, instance)
    assert isinstance(result, dg.SkipReason)
    assert "CLOTHING_TEST_STAGE_URL" in result.skip_message and cursor is None


@pytest.mark.parametrize(
    ("cron", "expected"), [(None, DEFAULT_RETRAIN_CRON), ("0 1 * * *", "0 1 * * *")]
)
def test_retrain_schedule_cron_and_target(local_env, monkeypatch, cron, expected):
    if cron:
        monkeypatch.setenv("CLOTHING_RETRAIN_CRON", cron)
    loaded = defs()
    [schedule] = loaded.schedules
    assert schedule.cron_schedule == expected and schedule.execution_timezone == "UTC"
    job = loaded.resolve_job_def(schedule.job_name)
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert {"trained_model", "clothing_predictions", "clothing_train", "clothing_test"} <= selected
    assert "challenger_promoted" in {k.name for k in job.asset_layer.asset_graph.asset_check_keys}


def test_a_challenger_below_the_gate_is_rejected_and_never_scores(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_MIN_VAL_ACCURACY", "1.01")  # no model can pass
    result = dg.materialize(
        [*all_assets(), *all_checks()],
        resources=resources_for(),
        run_config=TINY_RUN_CONFIG,
        raise_on_error=False,
    )
    gate = {e.check_name: e for e in result.get_asset_check_evaluations()}["challenger_promoted"]
    assert not gate.passed and "CLOTHING_MIN_VAL_ACCURACY" in gate.description
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"trained_model", "champion_model"} <= materialized
    assert "clothing_predictions" not in materialized  # no champion: nothing to score with
    assert champion_version(local_env) is None
    assert read_table(local_env, "clothing_test")["MODEL_VERSION"].isna().all()
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "no champion model" in failure.step_failure_data.error.message


@pytest.mark.parametrize(
    ("p", "q", "distance"),
    [({"a": 0.5, "b": 0.5}, {"a": 0.5, "b": 0.5}, 0.0), ({"a": 1.0}, {"b": 1.0}, 1.0),
     ({"a": 0.75, "b": 0.25}, {"a": 0.25, "b": 0.75}, 0.5),
     ({"a": 1.0}, {"a": 0.5, "c": 0.5}, 0.5)],
)  # fmt: skip
def test_total_variation(p, q, distance):
    import pandas as pd

    assert total_variation(pd.Series(p), pd.Series(q)) == pytest.approx(distance)
