"""The promotion gate, and the retraining condition's cron from its variable. (The stage
observer and the conditions on real stages: test_declarative_automation.py.)"""

from __future__ import annotations

import dagster as dg
import pytest

from clothing_assets.definitions import all_assets, all_checks, defs
from clothing_assets.defs.automation import AUTOMATION_SENSOR
from clothing_assets.defs.checks import total_variation
from clothing_assets.environment import resources_for
from clothing_assets.settings import VARIABLES
from clothing_assets_tests.support import TINY_RUN_CONFIG, champion_version, read_table

DEFAULT_RETRAIN_CRON = VARIABLES["CLOTHING_RETRAIN_CRON"].default


@pytest.mark.parametrize(
    ("cron", "expected"), [(None, DEFAULT_RETRAIN_CRON), ("0 1 * * *", "0 1 * * *")]
)
def test_the_retraining_condition_follows_the_cron_variable(local_env, monkeypatch, cron, expected):
    """trained_model's condition ticks on CLOTHING_RETRAIN_CRON (UTC); the one automation
    sensor evaluates every asset's condition, and no schedule is left beside it."""
    if cron:
        monkeypatch.setenv("CLOTHING_RETRAIN_CRON", cron)
    loaded = defs()
    assert not loaded.schedules
    graph = loaded.resolve_asset_graph()
    condition = graph.get(dg.AssetKey("trained_model")).automation_condition
    assert condition.get_label() == f"retrain on {expected} (UTC)"
    ticks = [c for c in _walk(condition) if "cron_tick_passed" in c.name]
    assert ticks and all(c.cron_schedule == expected for c in ticks)
    sensor = loaded.resolve_sensor_def(AUTOMATION_SENSOR)
    materialized = {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
    assert sensor.asset_selection.resolve(graph) == materialized  # the stages are observed


def _walk(condition: dg.AutomationCondition):
    yield condition
    for child in condition.children:
        yield from _walk(child)


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
