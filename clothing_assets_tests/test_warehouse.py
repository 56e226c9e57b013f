"""The DuckDB warehouse on a real DuckDB file: sync semantics and atomic write-back."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse, WarehouseUnavailableError
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS
from clothing_assets_tests.conftest import COLOURS, make_stage, write_image


@pytest.fixture
def warehouse(tmp_path) -> DuckDBWarehouse:
    return DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))


@pytest.fixture
def stage(tmp_path, warehouse):
    root = tmp_path / "stage"
    make_stage(root, 2, classes=("hat", "shoes"))
    warehouse.create_stage("s", str(root))
    warehouse.refresh_stage("s")
    return root


def _predictions(rows: pd.DataFrame, version: str, **overrides) -> pd.DataFrame:
    frame = rows[["RELATIVE_PATH", "SIZE", "LAST_MODIFIED"]].copy()
    frame["TYPE"] = "hat"
    frame["CONFIDENCE"] = 0.5
    frame["PRED_TIMESTAMP"] = datetime.now(UTC)
    frame["MODEL_VERSION"] = version
    frame["ERROR"] = None
    for key, value in overrides.items():
        frame[key] = value
    return frame[PREDICTION_COLUMNS]


def test_stage_refresh_summarises_the_listing(warehouse, stage):
    summary = warehouse.refresh_stage("s")
    assert summary.file_count == 4
    assert summary.total_bytes == sum(p.stat().st_size for p in stage.rglob("*.jpg"))


def test_sync_inserts_updates_and_deletes_and_is_idempotent(warehouse, stage):
    first = warehouse.sync_catalog("clothing_test", "s")
    assert (first.inserted, first.updated, first.deleted, first.rows) == (4, 0, 0, 4)
    second = warehouse.sync_catalog("clothing_test", "s")
    assert (second.inserted, second.updated, second.deleted, second.rows) == (0, 0, 0, 4)

    write_image(stage / "hat" / "hat_0.jpg", COLOURS["shoes"], seed=99, size=64)  # changed
    (stage / "shoes" / "shoes_1.jpg").unlink()  # vanished
    write_image(stage / "shoes" / "new.jpg", COLOURS["shoes"], seed=5)  # new
    warehouse.refresh_stage("s")
    third = warehouse.sync_catalog("clothing_test", "s")
    assert (third.inserted, third.updated, third.deleted, third.rows) == (1, 1, 1, 4)
    paths = warehouse.read_catalog("clothing_test")["RELATIVE_PATH"].tolist()
    assert paths == sorted(["hat/hat_0.jpg", "hat/hat_1.jpg", "shoes/new.jpg", "shoes/shoes_0.jpg"])


def test_sync_keeps_predictions_of_unchanged_files_and_clears_changed_ones(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    assert warehouse.write_predictions(_predictions(rows, "v1")) == 4
    assert warehouse.unscored_rows("v1").empty
    assert len(warehouse.unscored_rows("v2")) == 4  # a new model rescoring everything

    write_image(stage / "hat" / "hat_1.jpg", COLOURS["hat"], seed=42, size=50)
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")
    table = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")
    assert table.loc["hat/hat_1.jpg", ["TYPE", "MODEL_VERSION"]].isna().all()
    assert (table.drop(index="hat/hat_1.jpg")["MODEL_VERSION"] == "v1").all()
    assert warehouse.unscored_rows("v1")["RELATIVE_PATH"].tolist() == ["hat/hat_1.jpg"]


def test_write_back_skips_rows_whose_file_changed_while_scoring(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    stale = _predictions(rows, "v1")
    stale.loc[0, "SIZE"] = stale.loc[0, "SIZE"] + 1  # what the scorer saw is not the file now
    assert warehouse.write_predictions(stale) == 3
    assert warehouse.unscored_rows("v1")["RELATIVE_PATH"].tolist() == [rows.loc[0, "RELATIVE_PATH"]]


def test_failed_write_back_leaves_the_table_unchanged(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    assert warehouse.write_predictions(_predictions(rows.iloc[:2], "v0")) == 2
    before = warehouse.read_catalog("clothing_test")
    bad = _predictions(rows, "v1", CONFIDENCE="not a number")  # the cast fails mid-transaction
    with pytest.raises(Exception, match="(?i)conver|cast"):
        warehouse.write_predictions(bad)
    pd.testing.assert_frame_equal(warehouse.read_catalog("clothing_test"), before)
    assert warehouse.write_predictions(_predictions(rows, "v1")) == 4  # and the next run completes


def test_train_catalog_flags_files_without_a_class_folder_and_records_errors(warehouse, stage):
    write_image(stage / "loose.jpg", COLOURS["hat"], seed=1)
    warehouse.refresh_stage("s")
    result = warehouse.sync_catalog("clothing_train", "s")
    assert result.rows == 5 and result.errors == 1
    table = warehouse.read_catalog("clothing_train").set_index("RELATIVE_PATH")
    assert "no class folder" in table.loc["loose.jpg", "ERROR"]
    errors = pd.DataFrame({"RELATIVE_PATH": ["hat/hat_0.jpg"], "ERROR": ["corrupt image: x"]})
    assert warehouse.record_errors("clothing_train", errors) == 1
    assert warehouse.sync_catalog("clothing_train", "s").errors == 2  # kept: file unchanged


def test_unknown_stage_and_unwritable_file_give_clear_errors(tmp_path, warehouse):
    import dagster as dg

    with pytest.raises(dg.Failure, match="stage 'nope' does not exist"):
        warehouse.sync_catalog("clothing_train", "nope")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    broken = DuckDBWarehouse(duckdb=DuckDBResource(database=str(blocker / "w.duckdb")))
    with pytest.raises(WarehouseUnavailableError, match="CLOTHING_DUCKDB_PATH"):
        broken.read_catalog("clothing_train")
