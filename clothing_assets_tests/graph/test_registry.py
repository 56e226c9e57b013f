"""The model registry: versions, the champion gate, rollback and pinning, retention, and
a late scoring run that must not overwrite a newer model's predictions.

The lifecycle runs on real DuckDB (and on SnowflakeWarehouse over fakesnow), a real local Dask
cluster and a real Dagster instance; promotions on DuckDB go through the `clothing-assets`
command itself."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import fakesnow
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.cli import main as cli
from clothing_assets.definitions import all_assets, all_checks
from clothing_assets.environment import resources_for, resources_with
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_registry import (
    ModelRegistry,
    RegistryError,
    promotion_rule,
)
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.resources.warehouse import ModelRecord, Warehouse
from clothing_assets_tests.contract.test_warehouse_contract import predictions
from clothing_assets_tests.support import (
    COLOURS,
    TINY_TRAINING,
    WITHOUT_EMBEDDINGS,
    write_image,
)
from clothing_assets_tests.support.automation import Automation
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)

# --- the promotion rule, as a pure function ---------------------------------------------------


def _row(version: str, accuracy, *, compared_with=None, champion_accuracy=None) -> dict:
    return {
        "VERSION": version, "VAL_ACCURACY": accuracy, "COMPARED_WITH": compared_with,
        "CHAMPION_VAL_ACCURACY": champion_accuracy, "VAL_ROWS": 30,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("challenger", "champion", "promoted", "says"),
    [
        (_row("b", None), None, False, "never promoted"),
        (_row("b", 0.4), None, False, "below CLOTHING_MIN_VAL_ACCURACY"),
        (_row("b", 0.6), None, True, "first champion"),
        (_row("b", 0.8, compared_with="a", champion_accuracy=0.85), _row("a", 0.9), False,
         "worse than champion a"),
        (_row("b", 0.845, compared_with="a", champion_accuracy=0.85), _row("a", 0.9), True,
         "on the same 30 validation rows"),
        (_row("b", 0.9, compared_with="x", champion_accuracy=0.5), _row("a", 0.9), False,
         "the champion is now a"),
        (_row("b", 0.9, compared_with=None), _row("a", 0.9), False, "retrain to compare"),
    ],
)  # fmt: skip
def test_promotion_rule(challenger, champion, promoted, says):
    decision, reason = promotion_rule(challenger, champion, min_val_accuracy=0.5, margin=0.01)
    assert decision is promoted and says in reason


# --- registry operations on both warehouses ---------------------------------------------------


@pytest.fixture(params=["duckdb", "fakesnow"])
def registry(request, tmp_path) -> ModelRegistry:
    store = ModelStoreResource(directory=str(tmp_path / "store"), cache_directory=str(tmp_path))
    if request.param == "duckdb":
        warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
        yield ModelRegistry(warehouse=warehouse, store=store, keep_models=1)
        return
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        warehouse = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="X")
        yield ModelRegistry(warehouse=warehouse, store=store, keep_models=1)


def _register(registry: ModelRegistry, tag: str, accuracy: float | None = 0.9, **more) -> str:
    data = f"model {tag}".encode()
    record = {
        "created_at": datetime.now(UTC), "architecture": "resnet18", "image_size": 32,
        "classes": ["hat", "shoes"], "val_accuracy": accuracy, "val_rows": 3,
        "train_rows": 9, "catalog_fingerprint": "fp", **more,
    }  # fmt: skip
    return registry.register(data, record, run_id=f"run-{tag}")


def test_unknown_deleted_unmeasured_and_tampered_versions_are_refused(registry):
    with pytest.raises(RegistryError, match="unknown model version 'nope'.*models list"):
        registry.promote("nope")
    unmeasured = _register(registry, "u", accuracy=None)
    with pytest.raises(RegistryError, match="no recorded validation accuracy"):
        registry.promote(unmeasured)

    version = _register(registry, "t")
    path = registry.store._path(version)[1]
    with open(path, "wb") as handle:  # tampered after it was stored
        handle.write(b"model T")
    with pytest.raises(RegistryError, match="does not match its version.*refused"):
        registry.promote(version)
    assert registry.champion() is None  # nothing changed
    with pytest.raises(RegistryError, match="does not match its version"):
        registry.load(version)


def test_a_stored_version_is_never_overwritten(registry):
    version = _register(registry, "a")
    path = Path(registry.store._path(version)[1])
    before = path.read_bytes()
    assert _register(registry, "a") == version  # the same bytes again: same version, one file
    assert path.read_bytes() == before
    assert len(registry.warehouse.read_models()) == 1


def test_retention_keeps_the_champion_and_referenced_versions(registry, tmp_path):
    warehouse: Warehouse = registry.warehouse
    stage = tmp_path / "stage"
    write_image(stage / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    warehouse.create_stage("s", str(stage))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")

    referenced = _register(registry, "r")
    warehouse.write_predictions(predictions(warehouse.unscored_rows(referenced), referenced))
    champion = _register(registry, "c")
    registry.promote(champion)
    old = _register(registry, "o")
    newest = _register(registry, "n")
    deleted = registry.apply_retention()
    assert deleted == [old]  # keep_models=1 keeps the newest; the others are needed
    assert not registry.store.exists(old)
    for kept in (referenced, champion, newest):
        assert registry.store.exists(kept)
    models = warehouse.read_models().set_index("VERSION")
    assert pd.notna(models.loc[old, "DELETED_AT"]) and models.loc[referenced, "ROWS_SCORED"] == 1
    with pytest.raises(RegistryError, match="deleted by retention.*models list"):
        registry.promote(old)
    # a late write of the deleted version's predictions is refused: no row names a lost file
    assert (
        warehouse.write_predictions(predictions(warehouse.read_catalog("clothing_test"), old)) == 0
    )


def test_a_late_run_with_an_older_model_never_overwrites_the_champions_rows(registry, tmp_path):
    """Two scoring runs overlap and the older model's write-back comes last: the champion's rows
    stay."""
    warehouse: Warehouse = registry.warehouse
    stage = tmp_path / "stage"
    for i in range(3):
        write_image(stage / "hat" / f"{i}.jpg", COLOURS["hat"], seed=i)
    warehouse.create_stage("s", str(stage))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")

    old = _register(registry, "old")
    registry.promote(old)
    rows_seen_by_old_run = warehouse.unscored_rows(old)  # a sensor run starts with `old`
    new = _register(registry, "new")
    registry.promote(new)  # a retrain-and-rescore promotes `new` and writes first
    assert warehouse.write_predictions(predictions(warehouse.unscored_rows(new), new)) == 3
    late = predictions(rows_seen_by_old_run, old, TYPE="shoes")
    assert warehouse.write_predictions(late) == 0  # the late run finishes: refused
    table = warehouse.read_catalog("clothing_test")
    assert set(table["MODEL_VERSION"]) == {new} and set(table["TYPE"]) == {"hat"}

    # rolled back to `old`: now its predictions replace the newer, no longer champion, ones
    registry.promote(old, "rollback")
    assert warehouse.write_predictions(late) == 3
    assert set(warehouse.read_catalog("clothing_test")["MODEL_VERSION"]) == {old}
    events = warehouse.read_model_events()
    assert f"retired: {old} became the champion" in set(events["REASON"])


# --- the whole lifecycle through Dagster ------------------------------------------------------


def _config(seed: int) -> dg.RunConfig:
    return dg.RunConfig(ops={"trained_model": {"config": {**TINY_TRAINING, "seed": seed}}})


def _run(resources, selection, run_config, instance) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        [*all_assets(), *all_checks()], resources=resources, selection=selection,
        run_config=run_config, instance=instance, raise_on_error=False,
    )  # fmt: skip
    return result


def _lifecycle(
    env,
    monkeypatch,
    instance,
    resources: Callable[[], dict],
    warehouse: Warehouse,
    promote,
    everything: str | dg.AssetSelection = "*",
) -> None:
    """Train and promote A; score; a successor that cannot pass the gate is rejected and A
    stays; new files are scored by A; a third version is promoted by hand and then A again."""
    first = _run(resources(), everything, _config(0), instance)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    a = warehouse.champion()["VERSION"]

    monkeypatch.setenv("CLOTHING_MIN_VAL_ACCURACY", "1.01")  # no successor can pass
    second = _run(resources(), everything, _config(1), instance)
    gate = {e.check_name: e for e in second.get_asset_check_evaluations()}["challenger_promoted"]
    assert not gate.passed and "CLOTHING_MIN_VAL_ACCURACY" in gate.description
    assert second.success  # the rejection fails the check, not the run
    assert warehouse.champion()["VERSION"] == a
    b = warehouse.read_models()["VERSION"].iloc[-1]
    assert b != a and warehouse.model(b)["STATUS"] == "rejected"

    # the runs above did not observe the stages: the baseline, before the first evaluation
    automation = Automation(instance, resources())
    automation.observe()
    automation.evaluate()
    write_image(env.test / "hat" / "late arrival.jpg", COLOURS["hat"], seed=555)
    automation.observe()
    requested = automation.evaluate()
    assert requested == {"clothing_test", "clothing_predictions"}
    third = _run(resources(), sorted(requested), None, instance)
    assert third.success
    table = warehouse.read_catalog("clothing_test")
    assert set(table["MODEL_VERSION"]) == {a} and "hat/late arrival.jpg" in set(
        table["RELATIVE_PATH"]
    )

    c_run = _run(resources(), ["trained_model", "champion_model"], _config(2), instance)
    c = warehouse.read_models()["VERSION"].iloc[-1]
    assert c_run.success and c not in (a, b) and warehouse.champion()["VERSION"] == a
    for version in (c, a):  # pinned by hand, then rolled back
        promote(version)
        assert warehouse.champion()["VERSION"] == version
        assert set(warehouse.read_catalog("clothing_test")["MODEL_VERSION"]) == {version}

    history = warehouse.read_model_events()
    steps = [(v, s) for v, s in zip(history["VERSION"], history["STATUS"], strict=True)]
    for step in [(a, "challenger"), (a, "champion"), (b, "challenger"), (b, "rejected"),
                 (c, "rejected"), (c, "champion"), (a, "retired"), (c, "retired")]:  # fmt: skip
        assert step in steps, step
    assert history["REASON"].str.len().min() > 0
    reasons = warehouse.read_models().set_index("VERSION")["REASON"]
    assert "by hand" in reasons[a] and "CLOTHING_MIN_VAL_ACCURACY" in reasons[b]
    for version in warehouse.read_catalog("clothing_test")["MODEL_VERSION"].unique():
        assert (env.models / "versions" / f"{version}.pt").is_file()  # a stored file


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lifecycle_on_duckdb_with_the_cli(local_env, monkeypatch, tmp_path, capsys):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:

        def promote(version: str) -> None:
            # the gate stays at 1.01: both versions are below it, so promoting them is forced
            assert (
                cli(["models", "promote", version, "--force", "--reason", "a person decided"]) == 0
            )

        warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(local_env.duckdb)))
        _lifecycle(local_env, monkeypatch, instance, resources_for, warehouse, promote)
        runs = instance.get_runs()
    assert {r.job_name for r in runs} >= {"promote_model", "__ephemeral_asset_job__"}
    capsys.readouterr()
    assert cli(["models", "list"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split()[:5] == [
        "version",
        "status",
        "val_acc",
        "created",
        "rows_scored",
    ]
    assert "champion" in listing and "rejected" in listing and "retired" in listing
    assert cli(["models", "promote", "0123456789abcdef"]) == 2
    assert "models list" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_lifecycle_on_snowflake_sql(local_env, monkeypatch):
    with fakesnow.patch(nop_regexes=NOP_REGEXES), dg.instance_for_test() as instance:
        warehouse = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="X")

        def resources() -> dict:
            return resources_with(warehouse)

        def promote(version: str) -> None:
            config = {"ops": {"champion_model": {"config": {"version": version, "force": True}}}}
            result = _run(resources(), ["champion_model", "clothing_predictions"], config,
                          instance)  # fmt: skip
            assert result.success, [e.message for e in result.all_events if e.is_failure]

        _lifecycle(local_env, monkeypatch, instance, resources, warehouse, promote,
                   everything=WITHOUT_EMBEDDINGS)  # fmt: skip


def test_model_record_classes_are_json():
    record = ModelRecord(
        version="v", sha256=hashlib.sha256(b"").hexdigest(), uri="u",
        created_at=datetime.now(UTC) - timedelta(days=1), architecture="resnet18",
        image_size=32, classes=["a", "b"], val_accuracy=None, val_rows=0, train_rows=1,
        catalog_fingerprint="f",
    )  # fmt: skip
    assert json.loads(record.params()["classes"]) == ["a", "b"]
