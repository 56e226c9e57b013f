"""A file whose reading kills every Dask worker that scores it: its row gets an ERROR that
sticks, every other row is written, in a chunk of its own or mixed with others, on a local or
an S3 stage, and the next run does not read the file again."""

from __future__ import annotations

from types import SimpleNamespace

import dagster as dg
import dask
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from distributed.scheduler import KilledWorker

from clothing_assets.environment import resources_for
from clothing_assets.ml.cluster import worker_died_result
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets_tests.support import (
    CLASSES,
    faults,
    make_stage,
    materialize,
    metadata_of,
    read_table,
    register_model,
)
from clothing_assets_tests.support.models import tiny_model, tiny_model_bytes
from clothing_assets_tests.support.s3_server import s3_endpoint, upload  # noqa: F401

SCORE = ["clothing_dataset", "clothing_test", "clothing_predictions"]
POISON = "pants/pants_1.jpg"


def test_a_killed_rows_result_names_the_file_version_it_was_read_as():
    row = {
        "RELATIVE_PATH": "hat/a.jpg", "SIZE": 10, "URL": "s3://b/hat/a.jpg",
        "LAST_MODIFIED": pd.Timestamp("2026-01-01", tz="UTC"), "ETAG": "abc123",
    }  # fmt: skip
    died = KilledWorker("clothing-score-x", SimpleNamespace(address="tcp://127.0.0.1:1"), 0)
    result = worker_died_result(row, "v1", died)
    assert {k: result[k] for k in ("RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG")} == {
        k: row[k] for k in ("RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG")
    }
    assert result["MODEL_VERSION"] == "v1" and result["TYPE"] is None
    assert result["ERROR"].startswith("the Dask worker died while scoring this file")


def test_a_chunk_of_only_killed_rows_is_written_against_its_etag(tmp_path):
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
    make_stage(tmp_path / "stage", 1, classes=("hat",))
    warehouse.create_stage("s", str(tmp_path / "stage"))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")
    [row] = warehouse.unscored_rows("v1").to_dict("records")
    died = KilledWorker("clothing-score-x", SimpleNamespace(address="tcp://127.0.0.1:1"), 0)
    assert warehouse.write_prediction_rows([worker_died_result(row, "v1", died)]) == 1
    assert warehouse.unscored_rows("v1").empty


def test_a_result_lacking_a_written_column_is_refused_not_dropped(tmp_path):
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
    make_stage(tmp_path / "stage", 2, classes=("hat",))
    warehouse.create_stage("s", str(tmp_path / "stage"))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")
    first, second = warehouse.unscored_rows("v1").to_dict("records")
    good = {**first, "TYPE": "hat", "CONFIDENCE": 0.9, "MODEL_VERSION": "v1", "ERROR": None,
            "PRED_TIMESTAMP": pd.Timestamp.now("UTC")}  # fmt: skip
    lacking = {k: v for k, v in good.items() if k != "ETAG"} | {
        "RELATIVE_PATH": second["RELATIVE_PATH"]
    }
    with pytest.raises(ValueError, match=r"1 prediction rows lack columns \['ETAG'\]"):
        warehouse.write_prediction_rows([good, lacking])
    assert len(warehouse.unscored_rows("v1")) == 2  # nothing of the chunk was written


@pytest.fixture
def poisoned(local_env, monkeypatch):
    """The test stage's POISON file kills whichever worker starts to read it (the file named
    in the result is where each death is recorded); three workers outnumber its two deaths."""
    deaths = local_env.root / "deaths"
    monkeypatch.setenv(faults.EXIT_WHEN_SCORING, POISON)
    monkeypatch.setenv(faults.EXIT_MARKER, str(deaths))
    with dask.config.set({"distributed.worker.preload": ["clothing_assets_tests.support.faults"]}):
        yield deaths


def _resources() -> dict:
    # allowed-failures 0: the batch is split after one death and the row alone dies once more
    dask_cluster = DaskClusterResource(n_workers=3, threads_per_worker=1, allowed_failures=0)
    return {**resources_for(), "dask": dask_cluster}


def _score(write_every: int) -> dg.ExecuteInProcessResult:
    config = {"batch_size": 4, "write_every": write_every}
    return materialize(
        SCORE,
        dg.RunConfig(ops={"clothing_predictions": {"config": config}}),
        resources=_resources(),
    )


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("stage", "write_every"),
    [("local", 1), ("s3", 1), ("s3", 256)],
    ids=["local-chunk-of-its-own", "s3-chunk-of-its-own", "s3-mixed-chunk"],
)
def test_a_file_that_kills_its_workers_is_recorded_once_and_never_read_again(
    local_env, poisoned, request, monkeypatch, stage, write_every
):
    if stage == "s3":
        request.getfixturevalue("s3_endpoint")
        monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", upload(local_env.test, "test"))
    version = register_model(local_env, tiny_model_bytes())

    result = _score(write_every)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert len(poisoned.read_text().splitlines()) == 2  # on its batch, then alone
    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    error = table.loc[POISON, "ERROR"]
    assert error.startswith("the Dask worker died while scoring this file (KilledWorker"), error
    assert pd.isna(table.loc[POISON, "TYPE"]) and table.loc[POISON, "MODEL_VERSION"] == version
    others = table.drop(index=POISON)
    assert len(others) == 8 and others["ERROR"].isna().all()
    assert others["TYPE"].isin(CLASSES).all() and (others["MODEL_VERSION"] == version).all()
    meta = metadata_of(result, "clothing_predictions")
    assert meta["rows_scored"] == 9 and meta["rows_with_error"] == 1

    again = _score(write_every)  # nothing left to score: the file is not read again
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    assert metadata_of(again, "clothing_predictions")["rows_scored"] == 0
    assert len(poisoned.read_text().splitlines()) == 2


@pytest.mark.timeout(600)
def test_a_file_that_kills_its_workers_gets_an_error_and_every_other_row_is_scored(
    local_env, monkeypatch
):
    # The run's own LocalCluster (worker processes under nannies); whichever worker starts
    # to read the poison file dies on the spot, as one the OOM killer ends mid-decode. Five
    # workers outnumber the four deaths: on a loaded 2-core machine a nanny's restart can take
    # minutes or not come at all, and the rows must not wait for one.
    monkeypatch.setenv("CLOTHING_DASK_WORKERS", "5")
    version = register_model(local_env, tiny_model()[0])
    poison, deaths = "pants/pants_1.jpg", local_env.root / "deaths"
    monkeypatch.setenv(faults.EXIT_WHEN_SCORING, poison)
    monkeypatch.setenv(faults.EXIT_MARKER, str(deaths))
    with dask.config.set({"distributed.worker.preload": ["clothing_assets_tests.support.faults"]}):
        result = materialize(
            ["clothing_dataset", "clothing_test", "clothing_predictions"],
            dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 4}}}),
        )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    # allowed-failures 1: two workers died on its batch of 4, two more on the file alone
    assert len(deaths.read_text().splitlines()) == 4

    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    error = table.loc[poison, "ERROR"]
    assert error.startswith("the Dask worker died while scoring this file (KilledWorker"), error
    assert pd.isna(table.loc[poison, "TYPE"]) and table.loc[poison, "MODEL_VERSION"] == version
    others = table.drop(index=poison)
    assert len(others) == 8 and others["ERROR"].isna().all()
    assert others["TYPE"].isin(CLASSES).all() and (others["MODEL_VERSION"] == version).all()
    meta = metadata_of(result, "clothing_predictions")
    assert meta["rows_scored"] == 9 and meta["rows_with_error"] == 1
