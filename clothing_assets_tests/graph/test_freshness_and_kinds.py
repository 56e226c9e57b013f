"""Freshness policies from their variables, and kinds and metadata from the active deployment,
as the definitions carry them and as `dg list defs` lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from clothing_assets.definitions import defs
from clothing_assets.defs.sensors import OBSERVER, build_stage_observer
from clothing_assets.environment import RESOURCES_BY_ENVIRONMENT, WAREHOUSE_KIND, resources_for
from clothing_assets.settings import VARIABLES, SettingsError
from clothing_assets_tests.support import REPO_ROOT, register_model, sensor_tick

DG = Path(sys.executable).parent / "dg"
STAGES = ("clothing_dataset_train", "clothing_dataset")
WAREHOUSE_ASSETS = ("clothing_train", "clothing_test", "champion_model")


def _nodes() -> dict[str, Any]:
    """Each asset's node in the definitions built for the current environment."""
    graph = defs().resolve_asset_graph()
    return {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}


def _fail_windows() -> dict[str, timedelta]:
    return {
        name: node.freshness_policy.fail_window.to_timedelta()
        for name, node in _nodes().items()
        if node.freshness_policy is not None
    }


def _kinds() -> dict[str, set[str]]:
    return {name: set(node.kinds) for name, node in _nodes().items()}


def test_freshness_policies_carry_the_configured_windows(local_env, monkeypatch):
    for name in ("CLOTHING_PREDICTIONS_MAX_LAG_HOURS", "CLOTHING_MODEL_MAX_AGE_HOURS"):
        monkeypatch.delenv(name, raising=False)
    assert _fail_windows() == {
        "clothing_predictions": timedelta(hours=24),
        "trained_model": timedelta(days=8),
    }
    nodes = _nodes()
    assert isinstance(nodes["trained_model"].freshness_policy, dg.FreshnessPolicy)
    assert nodes["clothing_predictions"].tags["freshness_fail_after"] == "1d"
    assert nodes["trained_model"].tags["freshness_fail_after"] == "8d"

    monkeypatch.setenv("CLOTHING_PREDICTIONS_MAX_LAG_HOURS", "6")
    monkeypatch.setenv("CLOTHING_MODEL_MAX_AGE_HOURS", "36.5")
    assert _fail_windows() == {
        "clothing_predictions": timedelta(hours=6),
        "trained_model": timedelta(hours=36, minutes=30),
    }
    assert _nodes()["trained_model"].tags["freshness_fail_after"] == "1d12h30m"


def test_the_default_model_window_outlasts_the_default_retraining_interval():
    """A weekly retrain that finishes within a day keeps trained_model passing."""
    cron = VARIABLES["CLOTHING_RETRAIN_CRON"].default
    ticks = dg.TimeWindowPartitionsDefinition(
        cron_schedule=cron, start=datetime(2026, 1, 1), end=datetime(2027, 1, 1), fmt="%Y-%m-%d"
    )
    longest = max(
        window.end - window.start
        for window in map(ticks.time_window_for_partition_key, ticks.get_partition_keys())
    )
    assert longest == timedelta(days=7)
    default = timedelta(hours=VARIABLES["CLOTHING_MODEL_MAX_AGE_HOURS"].default)
    assert default - longest == timedelta(days=1)


@pytest.mark.parametrize("raw", ["0.001", "-3", "soon", "nan", "inf", "1e20"])
def test_a_window_dagster_cannot_hold_is_an_error_naming_the_variable(local_env, monkeypatch, raw):
    monkeypatch.setenv("CLOTHING_PREDICTIONS_MAX_LAG_HOURS", raw)
    with pytest.raises(SettingsError, match=f"CLOTHING_PREDICTIONS_MAX_LAG_HOURS='{raw}'"):
        defs()


def test_kinds_of_the_local_deployment(local_env):
    kinds = _kinds()
    for name in STAGES:
        assert kinds[name] == {"file"}, name
    for name in WAREHOUSE_ASSETS:
        assert kinds[name] == {"duckdb"}, name
    assert kinds["clothing_predictions"] == {"dask", "duckdb"}
    assert kinds["trained_model"] == {"pytorch"}


def _snowflake_by_account(monkeypatch):
    monkeypatch.delenv("CLOTHING_WAREHOUSE")
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "xy12345")


def _snowflake_by_name(monkeypatch):
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "snowflake")


@pytest.mark.parametrize("choose", [_snowflake_by_account, _snowflake_by_name])
def test_kinds_follow_the_warehouse_and_the_stage_schemes(local_env, monkeypatch, choose):
    choose(monkeypatch)
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", "s3://bucket/train")
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", "gcs://bucket/test")
    kinds = _kinds()
    assert type(resources_for()["warehouse"]).__name__ == "SnowflakeWarehouse"
    assert kinds["clothing_dataset_train"] == {"s3"}
    assert kinds["clothing_dataset"] == {"gcs"}
    for name in WAREHOUSE_ASSETS:
        assert kinds[name] == {"snowflake"}, name
    assert kinds["clothing_predictions"] == {"dask", "snowflake"}

    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", "gs://bucket/train")
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", "s3a://bucket/test")
    kinds = _kinds()
    assert kinds["clothing_dataset_train"] == {"gcs"}
    assert kinds["clothing_dataset"] == {"s3"}


def test_every_deployment_has_a_warehouse_kind():
    assert set(WAREHOUSE_KIND) == set(RESOURCES_BY_ENVIRONMENT)


def test_an_unknown_warehouse_fails_loading_with_the_variable_named(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "postgres")
    with pytest.raises(ValueError, match="CLOTHING_WAREHOUSE='postgres' is not one of local"):
        defs()


def test_the_catalog_table_name_is_the_one_the_warehouse_answers_to(local_env):
    """The qualified name in `dagster/table_name` queries the table the sync wrote."""
    loaded = defs()
    job = dg.define_asset_job("sync", selection=["clothing_dataset_train", "clothing_train"])
    with dg.instance_for_test() as instance:
        synced = dg.Definitions(
            assets=loaded.assets, resources=resources_for(), jobs=[job]
        ).resolve_job_def("sync")
        assert synced.execute_in_process(instance=instance).success
    name = _nodes()["clothing_train"].metadata["dagster/table_name"]
    assert name == "clothing.main.clothing_train"
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {name}").fetchone() == (18,)


def test_snowflake_metadata_names_the_tables_and_hides_stage_credentials(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "snowflake")
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", "s3://key:secret@bucket/train")
    for name in ("SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    nodes = _nodes()
    assert "dagster/table_name" not in nodes["clothing_train"].metadata
    assert nodes["clothing_dataset_train"].metadata["location"] == "s3://***@bucket/train"
    assert "secret" not in json.dumps({k: str(v) for k, v in nodes.items()})

    monkeypatch.setenv("SNOWFLAKE_DATABASE", "ANALYTICS")
    monkeypatch.setenv("SNOWFLAKE_SCHEMA", "CLOTHING")
    nodes = _nodes()
    assert (
        nodes["clothing_train"].metadata["dagster/table_name"]
        == "ANALYTICS.CLOTHING.CLOTHING_TRAIN"
    )
    assert (
        nodes["clothing_test"].metadata["dagster/table_name"] == "ANALYTICS.CLOTHING.CLOTHING_TEST"
    )


def test_dg_list_defs_shows_the_kinds_and_windows_of_the_environment(local_env, tmp_path):
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        # dg compares VIRTUAL_ENV with the project's .venv and warns when it is unset
        "VIRTUAL_ENV": sys.prefix,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "CLOTHING_WAREHOUSE": "snowflake",
        "CLOTHING_TRAIN_STAGE_URL": "s3://bucket/train",
        "CLOTHING_PREDICTIONS_MAX_LAG_HOURS": "6",
    }
    result = subprocess.run(
        [str(DG), "list", "defs", "--json"], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    listed = {a["asset_key"]: a for a in json.loads(result.stdout)["assets"]}
    tags = {key: {t["key"]: t["value"] for t in a.get("tags") or []} for key, a in listed.items()}
    assert tags["clothing_predictions"]["freshness_fail_after"] == "6h"
    assert tags["trained_model"]["freshness_fail_after"] == "8d"
    assert set(listed["clothing_dataset_train"]["kinds"]) == {"s3"}
    assert set(listed["clothing_dataset"]["kinds"]) == {"file"}
    assert set(listed["clothing_train"]["kinds"]) == {"snowflake"}
    assert set(listed["clothing_predictions"]["kinds"]) == {"dask", "snowflake"}
    # the automation as the UI shows it: the conditions and the two sensors, no schedule
    conditions = {
        key: (a.get("automation_condition") or {}).get("label") for key, a in listed.items()
    }
    assert conditions["trained_model"] == "retrain on 0 3 * * 0 (UTC)"
    assert conditions["clothing_predictions"] == "eager, with a champion"
    assert conditions["clothing_test"] == "stage version not synced, or eager"
    assert conditions["clothing_dataset"] is None  # observed, not materialized
    listing = json.loads(result.stdout)
    assert {s["name"] for s in listing["sensors"]} == {"clothing_automation", OBSERVER}
    assert not listing["schedules"]


def _observe(observer: dg.SensorDefinition, instance: dg.DagsterInstance):
    """One observer tick on this environment's resources, its observations stored."""
    result, _ = sensor_tick(observer, None, instance)
    for event in getattr(result, "asset_events", []):
        instance.report_runless_asset_event(event)
    return result


def _rescoring(result) -> dg.RunRequest | None:
    requests = getattr(result, "run_requests", None) or []
    return requests[0] if requests else None


def test_a_quiet_test_stage_is_rescored_before_the_predictions_go_stale(local_env):
    """Nothing new to score still needs a scoring run now and then, or the predictions' policy
    would fail on a stage that is merely quiet; the run is asked for only with a champion."""
    observer = build_stage_observer(rescore_after=timedelta(seconds=2))
    with dg.instance_for_test() as instance:
        first = _observe(observer, instance)
        assert _rescoring(first) is None  # both stages observed; no champion to score with
        no_champion = _observe(observer, instance)
        assert isinstance(no_champion, dg.SkipReason) and "no stage changed" in (
            no_champion.skip_message
        )

        register_model(local_env, b"a champion's bytes")
        never = _rescoring(_observe(observer, instance))
        assert [k.to_user_string() for k in never.asset_selection] == ["clothing_predictions"]
        assert "never" in never.tags["clothing/change"]
        assert never.tags["dagster/max_retries"] == "3"

        instance.report_runless_asset_event(dg.AssetMaterialization("clothing_predictions"))
        fresh = _observe(observer, instance)
        assert isinstance(fresh, dg.SkipReason)

        time.sleep(2.1)
        stale = _rescoring(_observe(observer, instance))
        assert stale is not None and stale.run_key != never.run_key
        assert "h ago" in stale.tags["clothing/change"]


def test_the_location_rescores_at_half_the_predictions_window(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_PREDICTIONS_MAX_LAG_HOURS", "6")
    sensor = defs().resolve_sensor_def(OBSERVER)
    assert sensor.description.endswith("rescores once the predictions are 3h old")
