"""Faults on real local processes: a Dask worker SIGKILLed mid-scoring, training SIGKILLed
mid-epoch, a crash inside the write-back transaction, two scoring runs at once, and a
warehouse file that cannot be used. Nothing is lost, nothing is doubled."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pytest
import torch
from dagster_duckdb import DuckDBResource
from distributed import Client, LocalCluster

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse, WarehouseUnavailableError
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    REPO_ROOT,
    TINY_RUN_CONFIG,
    TINY_TRAINING,
    champion_version,
    make_stage,
    materialize,
    metadata_of,
    read_table,
    write_image,
)
from clothing_assets_tests.support.faults import (
    ForgetModelOnce,
    KillWorkerOnceWhileScoring,
    StallWhileMarker,
)

ROOT = REPO_ROOT
TRAIN = ["clothing_dataset_train", "clothing_train", "trained_model", "champion_model"]
SCORE = ["clothing_dataset", "clothing_test", "clothing_predictions"]


def _materialize(selection, run_config=None, **kwargs):
    return materialize(selection, run_config, **kwargs)


def _train_tiny():
    result = _materialize(TRAIN, TINY_RUN_CONFIG)
    assert result.success, [e.message for e in result.all_events if e.is_failure]


def _assert_scored_exactly_once(env, rows: int) -> None:
    table = read_table(env, "clothing_test")
    assert len(table) == rows and table["RELATIVE_PATH"].is_unique
    assert table["TYPE"].isin(CLASSES).all() and table["ERROR"].isna().all()
    assert set(table["MODEL_VERSION"]) == {champion_version(env)}


@pytest.fixture
def cluster(monkeypatch) -> Iterator[Client]:
    """A real two-process Dask cluster on 127.0.0.1 that the runs use as an existing scheduler."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as local,
        Client(local) as client,
    ):
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", local.scheduler_address)
        yield client


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(300)
def test_a_worker_killed_mid_scoring_loses_and_doubles_no_row(local_env, cluster):
    make_stage(local_env.test, 8, seed=20_000)  # 24 images, 12 tasks of 2
    _train_tiny()
    marker = local_env.root / "killed-worker"
    cluster.register_plugin(KillWorkerOnceWhileScoring(str(marker)), name="kill-once")

    result = _materialize(
        SCORE, dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 2}}})
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    pid, key = marker.read_text().split(" ", 1)  # a worker really died mid-scoring ...
    assert key.startswith("clothing-score-") and not _alive(int(pid))
    meta = metadata_of(result, "clothing_predictions")  # ... and its tasks were run again
    assert meta["rows_scored"] == 24
    assert sum(meta["per_worker"].values()) == 24  # each row came back once
    _assert_scored_exactly_once(local_env, 24)


@pytest.mark.timeout(300)
def test_the_model_stays_on_the_workers_and_is_resent_to_one_that_lost_it(local_env, cluster):
    make_stage(local_env.test, 4, seed=21_000)  # 12 images
    _train_tiny()
    config = dg.RunConfig(
        ops={"clothing_predictions": {"config": {"batch_size": 2, "max_batches_in_flight": 1}}}
    )
    first = _materialize(SCORE, config)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    assert metadata_of(first, "clothing_predictions")["model_shipped_to_workers"] == 2

    # Both workers hold the model, so the next run sends no bytes; one of them then loses it
    # just as its first batch starts. That batch is sent again, with the model.
    for i in range(6):
        write_image(local_env.test / "pants" / f"later_{i}.jpg", COLOURS["pants"], seed=500 + i)
    marker = local_env.root / "forgot-model"
    cluster.register_plugin(ForgetModelOnce(str(marker)), name="forget-model-once")
    second = _materialize(SCORE, config)
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    assert marker.read_text().split(" ", 1)[1].startswith("clothing-score-")
    meta = metadata_of(second, "clothing_predictions")
    assert meta["model_shipped_to_workers"] == 2  # sent only once the loss showed
    assert meta["rows_scored"] == 6 and sum(meta["per_worker"].values()) == 6
    _assert_scored_exactly_once(local_env, 18)


_TRAIN_CHILD = """
import json, sys
import dagster as dg
from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
config = dg.RunConfig(ops={"trained_model": {"config": json.loads(sys.argv[1])}})
dg.materialize(all_assets(), resources=resources_for(), selection=["trained_model"],
               run_config=config)
"""


@pytest.mark.timeout(300)
def test_training_killed_mid_epoch_resumes_from_its_last_checkpoint(local_env):
    assert _materialize(TRAIN[:2]).success  # the stage and its catalog
    # 15 training images in batches of 2: 7 steps an epoch, a checkpoint after every step
    config = {**TINY_TRAINING, "n_epochs": 2, "batch_size": 2, "checkpoint_every": 1}

    def checkpoints() -> list:  # one file per training job: checkpoint-<fingerprint>.pt
        return sorted(local_env.cache.glob("checkpoint-*.pt"))

    child = subprocess.Popen(
        [sys.executable, "-c", _TRAIN_CHILD, json.dumps(config)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not checkpoints() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    assert not (local_env.models / "versions").exists()  # it died before storing a model
    [checkpoint] = checkpoints()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert 1 <= state["step"] < 14 and state["batch"] > 0  # killed inside an epoch

    result = _materialize(
        ["trained_model"], dg.RunConfig(ops={"trained_model": {"config": config}})
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    meta = metadata_of(result, "trained_model")
    assert meta["resumed_from_step"] == state["step"]
    assert meta["training_steps"] == 14  # as many as an uninterrupted run
    assert meta["epochs"] == 2
    assert not checkpoint.exists()


_WRITE_BACK_CHILD = """
import os, signal, sys
from datetime import UTC, datetime
from dagster_duckdb import DuckDBResource
import clothing_assets.resources.duckdb_warehouse as module
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS

real_load_sql = module.load_sql

def load_sql(dialect, name):
    if name == "update_clothing_test_predictions":  # the batch is loaded; die before the UPDATE
        print("temporary table loaded", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real_load_sql(dialect, name)

module.load_sql = load_sql
warehouse = module.DuckDBWarehouse(duckdb=DuckDBResource(database=sys.argv[1]))
rows = warehouse.unscored_rows("v1")
rows = rows.assign(TYPE="hat", CONFIDENCE=0.9, PRED_TIMESTAMP=datetime.now(UTC),
                   MODEL_VERSION="v1", ERROR=None)
warehouse.write_predictions(rows[PREDICTION_COLUMNS])
print("not reached", flush=True)
"""


def test_a_crash_between_loading_the_batch_and_the_update_leaves_clothing_test_unchanged(tmp_path):
    database = str(tmp_path / "w.duckdb")
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=database))
    make_stage(tmp_path / "stage", 2, classes=("hat", "shoes"))
    warehouse.create_stage("s", str(tmp_path / "stage"))
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")
    first = warehouse.unscored_rows("v0").iloc[:2]
    first = first.assign(TYPE="shoes", CONFIDENCE=0.5, PRED_TIMESTAMP=pd.Timestamp.now("UTC"),
                         MODEL_VERSION="v0", ERROR=None)  # fmt: skip
    assert warehouse.write_predictions(first[PREDICTION_COLUMNS]) == 2
    before = warehouse.read_catalog("clothing_test")

    child = subprocess.run(
        [sys.executable, "-c", _WRITE_BACK_CHILD, database],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert child.stdout.strip() == "temporary table loaded"

    pd.testing.assert_frame_equal(warehouse.read_catalog("clothing_test"), before)
    rows = warehouse.unscored_rows("v1")  # and the next attempt completes
    rows = rows.assign(TYPE="hat", CONFIDENCE=0.9, PRED_TIMESTAMP=pd.Timestamp.now("UTC"),
                       MODEL_VERSION="v1", ERROR=None)  # fmt: skip
    assert warehouse.write_predictions(rows[PREDICTION_COLUMNS]) == 4
    assert set(warehouse.read_catalog("clothing_test")["MODEL_VERSION"]) == {"v1"}


_SCORE_CHILD = """
import json, sys, time
started = time.monotonic()
from pathlib import Path
import dagster as dg
from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
ready, other = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not other.exists():  # start together
    time.sleep(0.01)
imported = time.monotonic()
result = dg.materialize(
    all_assets(), resources=resources_for(), raise_on_error=False,
    selection=["clothing_dataset", "clothing_test", "clothing_predictions"],
)
[mat] = [m for m in result.get_asset_materialization_events()
         if m.asset_key.to_user_string() == "clothing_predictions"] or [None]
print(json.dumps({"success": result.success, "import_s": imported - started,
                  "run_s": time.monotonic() - imported,
                  "rows_scored": mat and mat.materialization.metadata["rows_scored"].value,
                  "failures": [e.message for e in result.all_events if e.is_failure]}))
"""


@pytest.mark.timeout(300)
def test_two_scoring_runs_at_once_both_complete_and_leave_one_consistent_table(local_env, cluster):
    _train_tiny()
    ready = [local_env.root / "ready-a", local_env.root / "ready-b"]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _SCORE_CHILD, str(ready[i]), str(ready[1 - i])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [child.communicate(timeout=240) for child in children]
    for child, (out, err) in zip(children, outputs, strict=True):
        assert child.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["success"], report["failures"]
    _assert_scored_exactly_once(local_env, 3 * len(CLASSES))


@pytest.mark.parametrize("kind", ["a folder", "not a DuckDB file"])
def test_an_unusable_warehouse_file_fails_at_once_naming_it(tmp_path, kind):
    path = tmp_path / "clothing.duckdb"
    if kind == "a folder":
        path.mkdir()
    else:
        path.write_bytes(os.urandom(4096))
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)))
    started = time.monotonic()
    with pytest.raises(WarehouseUnavailableError) as info:
        warehouse.read_catalog("clothing_train")
    assert time.monotonic() - started < 5  # not retried as if it were a lock
    message = str(info.value)
    assert str(path) in message and "CLOTHING_DUCKDB_PATH" in message
    assert "not a usable DuckDB file" in message


_HOLD_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(120)
"""


def test_a_warehouse_locked_by_another_process_waits_then_names_it(tmp_path):
    path = tmp_path / "clothing.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        impatient = DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)), lock_timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(WarehouseUnavailableError, match="locked by another process") as info:
            impatient.read_catalog("clothing_train")
        assert 1.0 <= time.monotonic() - started < 10
        assert str(path) in str(info.value)

        # a patient one gets in as soon as the other process lets go
        patient = DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)), lock_timeout_s=60)
        threading.Timer(1.0, holder.kill).start()
        assert patient.read_catalog("clothing_train").empty
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_a_run_on_an_unusable_warehouse_fails_naming_the_file_and_variable(local_env):
    local_env.duckdb.parent.mkdir(parents=True)
    local_env.duckdb.write_bytes(b"not a database" * 100)
    result = _materialize(["clothing_dataset_train", "clothing_train"])
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.step_failure_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert str(local_env.duckdb) in text and "CLOTHING_DUCKDB_PATH" in text


_CHUNKED_SCORE_CHILD = """
import dagster as dg
from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
config = {"batch_size": 1, "write_every": 1}
dg.materialize(all_assets(), resources=resources_for(),
               selection=["clothing_dataset", "clothing_test", "clothing_predictions"],
               run_config=dg.RunConfig(ops={"clothing_predictions": {"config": config}}))
"""


def _scored_rows(env) -> int:
    """Rows with a prediction, read while another process may be writing (it holds the DuckDB
    file's lock only for a moment at a time)."""
    import duckdb

    for _ in range(200):
        try:
            with duckdb.connect(str(env.duckdb), read_only=True) as conn:
                return conn.execute("SELECT count(TYPE) FROM clothing_test").fetchone()[0]
        except duckdb.IOException:
            time.sleep(0.05)
    raise TimeoutError("the DuckDB file stayed locked")


@pytest.mark.timeout(300)
def test_a_scoring_run_killed_part_way_keeps_its_chunks_and_the_next_scores_the_rest(
    local_env, cluster
):
    make_stage(local_env.test, 4, seed=22_000)  # 12 images, tasks of 1, written one by one
    _train_tiny()
    hold = local_env.root / "hold"
    hold.write_text("")
    cluster.register_plugin(StallWhileMarker(str(hold), after=2), name="stall")
    child = subprocess.Popen(
        [sys.executable, "-c", _CHUNKED_SCORE_CHILD], cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while _scored_rows(local_env) < 4 and child.poll() is None:
            assert time.monotonic() < deadline, "no chunk was written"
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)  # the run dies mid-scoring
    finally:
        child.kill()
        _, stderr = child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL, stderr.decode()[-3000:]
    kept = _scored_rows(local_env)
    assert 4 <= kept < 12  # the finished chunks survived the kill
    hold.unlink()

    result = _materialize(
        SCORE, dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 1}}})
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    assert metadata_of(result, "clothing_predictions")["rows_scored"] == 12 - kept
    _assert_scored_exactly_once(local_env, 12)
