"""The whole graph against a real Snowflake account: run with `pytest -m snowflake` and the
variables of README's Snowflake section set; skipped with the reason otherwise."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from clothing_assets.definitions import all_assets, all_checks
from clothing_assets.environment import resources_for
from clothing_assets_tests.support import TINY_TRAINING

REQUIRED = (
    "SNOWFLAKE_ACCOUNT",
    "SNOWFLAKE_USER",
    "SNOWFLAKE_WAREHOUSE",
    "SNOWFLAKE_DATABASE",
    "SNOWFLAKE_SCHEMA",
    "SNOWFLAKE_ROLE",
    "CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION",
    "CLOTHING_TRAIN_STAGE_URL",
    "CLOTHING_TEST_STAGE_URL",
)


def _missing() -> list[str]:
    missing = [name for name in REQUIRED if not os.environ.get(name)]
    if not (os.environ.get("SNOWFLAKE_PASSWORD") or os.environ.get("SNOWFLAKE_PRIVATE_KEY_PATH")):
        missing.append("SNOWFLAKE_PASSWORD or SNOWFLAKE_PRIVATE_KEY_PATH")
    return missing


pytestmark = [
    pytest.mark.snowflake,
    pytest.mark.skipif(
        not os.environ.get("SNOWFLAKE_ACCOUNT"),
        reason="live Snowflake test: SNOWFLAKE_ACCOUNT is not set (see README, Snowflake)",
    ),
]


def test_whole_graph_on_a_live_account(tmp_path, monkeypatch):
    missing = _missing()
    if missing:
        pytest.fail(f"SNOWFLAKE_ACCOUNT is set but these are not: {', '.join(missing)}")
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "snowflake")
    monkeypatch.setenv("CLOTHING_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("CLOTHING_MIN_VAL_ACCURACY", "0")
    resources = resources_for()
    run_config = dg.RunConfig(ops={"trained_model": {"config": TINY_TRAINING}})
    result = dg.materialize(
        [*all_assets(), *all_checks()], resources=resources, run_config=run_config
    )
    assert result.success

    warehouse = resources["warehouse"]
    test = warehouse.read_catalog("clothing_test")
    assert len(test) > 0 and test["MODEL_VERSION"].notna().all()
    assert (test["TYPE"].notna() | test["ERROR"].notna()).all()
    # a re-run changes nothing: no duplicate rows, nothing rescored
    again = dg.materialize(
        [*all_assets()],
        resources=resources,
        selection=["clothing_dataset", "clothing_test", "clothing_predictions"],
    )
    assert again.success
    after = warehouse.read_catalog("clothing_test")
    assert len(after) == len(test)
    assert after["PRED_TIMESTAMP"].tolist() == test["PRED_TIMESTAMP"].tolist()
