"""Promoting by hand a version that the gate rejected, or one below CLOTHING_MIN_VAL_ACCURACY,
needs `--force` (`force` in champion_model's run config); the override is recorded in the
registry's reason. Rollback to a version that passes the gate needs no flag."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.cli import main as cli
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_registry import ModelRegistry, RegistryError
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets_tests.support import REPO_ROOT, materialize, register_model, step_failure

CLI = Path(sys.executable).parent / "clothing-assets"
GATE_REASON = "validation accuracy 0.050 is below CLOTHING_MIN_VAL_ACCURACY 0.5"


@pytest.fixture
def gated(local_env, monkeypatch):
    """A champion (0.9), a version the gate rejected (0.05 against 0.5), a challenger below
    the gate and a retired former champion that passes it."""
    monkeypatch.setenv("CLOTHING_MIN_VAL_ACCURACY", "0.5")
    champion = register_model(local_env, b"champion bytes", val_accuracy=0.9)
    rejected = register_model(local_env, b"rejected bytes", status="challenger", val_accuracy=0.05)
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(local_env.duckdb)))
    warehouse.change_model_status(rejected, "rejected", GATE_REASON)
    low = register_model(local_env, b"low bytes", status="challenger", val_accuracy=0.3)
    retired = register_model(local_env, b"retired bytes", status="retired", val_accuracy=0.8)
    return warehouse, {"champion": champion, "rejected": rejected, "low": low, "retired": retired}


def _registry(local_env, warehouse) -> ModelRegistry:
    store = ModelStoreResource(
        directory=str(local_env.models), cache_directory=str(local_env.cache)
    )
    return ModelRegistry(warehouse=warehouse, store=store, min_val_accuracy=0.5)


def test_registry_refuses_without_force_and_records_the_override(local_env, gated):
    warehouse, v = gated
    registry = _registry(local_env, warehouse)
    with pytest.raises(RegistryError, match="rejected.*CLOTHING_MIN_VAL_ACCURACY.*force"):
        registry.promote(v["rejected"], "looks fine to me")
    with pytest.raises(RegistryError, match=r"0\.300.*below CLOTHING_MIN_VAL_ACCURACY 0\.5.*force"):
        registry.promote(v["low"])
    assert warehouse.champion()["VERSION"] == v["champion"]

    decision = registry.promote(v["rejected"], "looks fine to me", force=True)
    row = warehouse.model(v["rejected"])
    assert decision.promoted and row["STATUS"] == "champion"
    assert "forced" in row["REASON"] and GATE_REASON in row["REASON"]
    assert "looks fine to me" in row["REASON"]

    registry.promote(v["retired"])  # a rollback that passes the gate needs no force
    assert warehouse.champion()["VERSION"] == v["retired"]
    assert "forced" not in warehouse.model(v["retired"])["REASON"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([str(CLI), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip


def test_cli_promote_of_a_rejected_version_needs_force(local_env, gated, tmp_path, monkeypatch):
    warehouse, v = gated
    for version in (v["rejected"], v["low"]):
        refused = _cli("models", "promote", version, "--no-rescore", cwd=tmp_path)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith("error: ") and "CLOTHING_MIN_VAL_ACCURACY" in line
        assert "--force" in line
    assert warehouse.champion()["VERSION"] == v["champion"]

    monkeypatch.delenv("DAGSTER_HOME", raising=False)  # an ephemeral instance for the run
    assert cli(["models", "promote", v["rejected"], "--no-rescore", "--force",
                "--reason", "a person decided"]) == 0  # fmt: skip
    row = warehouse.model(v["rejected"])
    assert row["STATUS"] == "champion" and "forced" in row["REASON"]
    assert "a person decided" in row["REASON"]


def test_champion_model_run_config_needs_force_too(local_env, gated):
    warehouse, v = gated
    config = {"version": v["low"], "reason": "from the UI"}
    plain = {"champion_model": {"config": config}}
    refused = materialize(["champion_model"], dg.RunConfig(ops=plain))
    assert not refused.success
    assert "force" in step_failure(refused).message
    assert warehouse.champion()["VERSION"] == v["champion"]

    forced = {"champion_model": {"config": {**config, "force": True}}}
    assert materialize(["champion_model"], dg.RunConfig(ops=forced)).success
    reason = warehouse.model(v["low"])["REASON"]
    assert warehouse.champion()["VERSION"] == v["low"] and "forced" in reason
