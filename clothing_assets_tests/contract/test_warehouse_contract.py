"""One contract, two warehouses: every test runs on DuckDB and on SnowflakeWarehouse over
fakesnow, so the implementations cannot drift apart.

Under fakesnow, the production SQL of `clothing_assets/sql/snowflake/` runs for real except four
statements fakesnow lacks, stood in for by `FakesnowWarehouse` (see fakesnow_warehouse.py):
ALTER STAGE ... REFRESH and DIRECTORY(@stage) (a table holding the stage's listing replaces the
relation in the otherwise unchanged statements), GET_PRESIGNED_URL (local paths) and the
QUERY_TAG.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import duckdb
import fakesnow
import fsspec
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource
from fsspec.implementations.memory import MemoryFileSystem

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.warehouse import (
    PREDICTION_COLUMNS,
    InvalidIdentifierError,
    Warehouse,
)
from clothing_assets_tests.support import COLOURS, make_stage, write_image
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)

IMPLEMENTATIONS = ["duckdb", "fakesnow"]


@pytest.fixture(params=IMPLEMENTATIONS)
def warehouse(request, tmp_path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
        return
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        yield FakesnowWarehouse(snowflake=fake_connection(), storage_integration="TEST_INTEGRATION")


@pytest.fixture
def stage(tmp_path, warehouse):
    root = tmp_path / "stage"
    make_stage(root, 2, classes=("hat", "shoes"))
    warehouse.create_stage("s", str(root))
    warehouse.refresh_stage("s")
    return root


def predictions(rows: pd.DataFrame, version: str, **overrides) -> pd.DataFrame:
    frame = rows[["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG"]].copy()
    frame["TYPE"] = "hat"
    frame["CONFIDENCE"] = 0.5
    frame["PRED_TIMESTAMP"] = datetime.now(UTC)
    frame["MODEL_VERSION"] = version
    frame["ERROR"] = None
    for key, value in overrides.items():
        frame[key] = value
    return frame[PREDICTION_COLUMNS]


def comparable(frame: pd.DataFrame) -> list[dict]:
    """A catalog as plain records (NULLs as None), for equality across implementations."""
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in frame.astype(object).to_dict("records")
    ]


def test_refresh_summarises_the_stage(warehouse, stage):
    summary = warehouse.refresh_stage("s")
    assert (summary.name, summary.file_count) == ("s", 4)
    assert summary.total_bytes == sum(p.stat().st_size for p in stage.rglob("*.jpg"))
    assert warehouse.stage_file_count("s") == 4


def test_sync_inserts_updates_deletes_and_reruns_change_nothing(warehouse, stage):
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
    fourth = warehouse.sync_catalog("clothing_test", "s")
    assert (fourth.inserted, fourth.updated, fourth.deleted, fourth.rows) == (0, 0, 0, 4)
    table = warehouse.read_catalog("clothing_test")
    assert table["RELATIVE_PATH"].tolist() == [
        "hat/hat_0.jpg",
        "hat/hat_1.jpg",
        "shoes/new.jpg",
        "shoes/shoes_0.jpg",
    ]
    assert table.set_index("RELATIVE_PATH").loc["hat/hat_0.jpg", "SIZE"] == (
        (stage / "hat" / "hat_0.jpg").stat().st_size
    )


def test_sync_keeps_predictions_of_unchanged_files_and_clears_changed_ones(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    assert warehouse.write_predictions(predictions(rows, "v1")) == 4
    assert warehouse.unscored_rows("v1").empty
    assert len(warehouse.unscored_rows("v2")) == 4

    write_image(stage / "hat" / "hat_1.jpg", COLOURS["hat"], seed=42, size=50)
    warehouse.refresh_stage("s")
    assert warehouse.sync_catalog("clothing_test", "s").updated == 1
    table = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")
    assert table.loc["hat/hat_1.jpg", ["TYPE", "MODEL_VERSION", "CONFIDENCE"]].isna().all()
    kept = table.drop(index="hat/hat_1.jpg")
    assert (kept["MODEL_VERSION"] == "v1").all() and (kept["TYPE"] == "hat").all()
    assert warehouse.unscored_rows("v1")["RELATIVE_PATH"].tolist() == ["hat/hat_1.jpg"]


def test_write_back_skips_rows_whose_file_changed_while_scoring(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    stale = predictions(rows, "v1")
    stale.loc[0, "SIZE"] = stale.loc[0, "SIZE"] + 1
    assert warehouse.write_predictions(stale) == 3
    assert warehouse.unscored_rows("v1")["RELATIVE_PATH"].tolist() == [rows.loc[0, "RELATIVE_PATH"]]


def test_write_back_records_unreadable_rows_and_types_survive(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    frame = predictions(rows, "v1")
    frame.loc[1, ["TYPE", "CONFIDENCE"]] = [None, None]
    frame.loc[1, "ERROR"] = "corrupt image: truncated"
    assert warehouse.write_predictions(frame) == 4
    table = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")
    bad = rows.loc[1, "RELATIVE_PATH"]
    assert table.loc[bad, "ERROR"] == "corrupt image: truncated" and pd.isna(table.loc[bad, "TYPE"])
    assert table["CONFIDENCE"].dropna().eq(0.5).all()
    assert pd.api.types.is_datetime64tz_dtype(table["PRED_TIMESTAMP"])
    assert warehouse.unscored_rows("v1").empty  # an unreadable row counts as scored


def test_failed_write_back_leaves_the_table_unchanged(warehouse, stage):
    warehouse.sync_catalog("clothing_test", "s")
    rows = warehouse.unscored_rows("v1")
    assert warehouse.write_predictions(predictions(rows.iloc[:2], "v0")) == 2
    before = warehouse.read_catalog("clothing_test")
    with pytest.raises(Exception):  # noqa: B017 - each implementation words it its own way
        warehouse.write_predictions(predictions(rows, "v1", CONFIDENCE="not a number"))
    pd.testing.assert_frame_equal(warehouse.read_catalog("clothing_test"), before)
    assert warehouse.write_predictions(predictions(rows, "v1")) == 4


def test_train_catalog_flags_rootless_files_and_keeps_recorded_errors(warehouse, stage):
    write_image(stage / "loose.jpg", COLOURS["hat"], seed=1)
    warehouse.refresh_stage("s")
    result = warehouse.sync_catalog("clothing_train", "s")
    assert (result.rows, result.errors) == (5, 1)
    table = warehouse.read_catalog("clothing_train").set_index("RELATIVE_PATH")
    assert "no class folder" in table.loc["loose.jpg", "ERROR"]
    errors = pd.DataFrame({"RELATIVE_PATH": ["hat/hat_0.jpg"], "ERROR": ["corrupt image: x"]})
    assert warehouse.record_errors("clothing_train", errors) == 1
    assert warehouse.record_errors("clothing_train", errors.iloc[:0]) == 0
    assert warehouse.sync_catalog("clothing_train", "s").errors == 2  # kept: file unchanged
    write_image(stage / "hat" / "hat_0.jpg", COLOURS["hat"], seed=7, size=48)
    warehouse.refresh_stage("s")
    assert warehouse.sync_catalog("clothing_train", "s").errors == 1  # changed: error cleared
    with pytest.raises(ValueError):
        warehouse.record_errors("clothing_test", errors)


class ETagStore(MemoryFileSystem):
    """An object store that reports each object's MD5 as its ETag and one fixed
    modification time, like S3 listing two writes within the same second: an overwrite that
    keeps the size is then told apart by its ETag alone."""

    protocol = "etagstore"
    store: dict = {}
    pseudo_dirs = [""]
    MODIFIED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

    @classmethod
    def _strip_protocol(cls, path):
        return super()._strip_protocol(str(path).removeprefix(f"{cls.protocol}://"))

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        found = super().find(path, maxdepth, withdirs, detail=True, **kwargs)
        for name, info in found.items():
            if info["type"] == "file":
                info["ETag"] = f'"{hashlib.md5(self.cat_file(name)).hexdigest()}"'
                info["LastModified"] = self.MODIFIED
        return found if detail else sorted(found)


fsspec.register_implementation(ETagStore.protocol, ETagStore, clobber=True)


@pytest.fixture
def etag_stage(warehouse) -> tuple[ETagStore, str]:
    store = ETagStore()
    root = f"etagstore://{uuid.uuid4().hex}/stage"
    store.pipe({f"{root}/hat/a.jpg": b"a" * 10, f"{root}/shoes/b.jpg": b"b" * 10})
    warehouse.create_stage("s", root)
    warehouse.refresh_stage("s")
    return store, root


def test_an_overwrite_with_the_same_size_and_time_but_a_new_etag_is_a_change(warehouse, etag_stage):
    store, root = etag_stage
    assert warehouse.sync_catalog("clothing_test", "s").inserted == 2
    read_for_scoring = warehouse.unscored_rows("v1")  # carries the ETag each file had
    assert read_for_scoring["ETAG"].tolist() == [
        hashlib.md5(b"a" * 10).hexdigest(),
        hashlib.md5(b"b" * 10).hexdigest(),
    ]
    assert warehouse.write_predictions(predictions(read_for_scoring, "v1")) == 2

    store.pipe(f"{root}/hat/a.jpg", b"c" * 10)  # same size, same time: only the ETag moves
    warehouse.refresh_stage("s")
    result = warehouse.sync_catalog("clothing_test", "s")
    assert (result.inserted, result.updated, result.deleted) == (0, 1, 0)
    table = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")
    assert table.loc["hat/a.jpg", "ETAG"] == hashlib.md5(b"c" * 10).hexdigest()
    assert pd.isna(table.loc["hat/a.jpg", "MODEL_VERSION"])  # the stale prediction is cleared
    assert table.loc["shoes/b.jpg", "MODEL_VERSION"] == "v1"
    assert warehouse.sync_catalog("clothing_test", "s").updated == 0  # and it stays synced

    # a late write-back of the prediction made from the old bytes is refused
    late = predictions(read_for_scoring, "v2")
    assert warehouse.write_predictions(late[late["RELATIVE_PATH"] == "hat/a.jpg"]) == 0
    assert warehouse.unscored_rows("v1")["RELATIVE_PATH"].tolist() == ["hat/a.jpg"]
    train = warehouse.sync_catalog("clothing_train", "s")
    assert train.inserted == 2
    assert warehouse.read_catalog("clothing_train")["ETAG"].notna().all()


def _drop_etag_columns(warehouse: Warehouse) -> None:
    """Make the catalogs look as they did before they stored ETags."""
    with warehouse._connect() as conn:
        for table in ("clothing_train", "clothing_test"):
            conn.cursor().execute(f"ALTER TABLE {table} DROP COLUMN ETAG")
    if isinstance(warehouse, FakesnowWarehouse):
        warehouse._tables_ready = False  # the next connection runs the DDL again


def test_catalogs_made_before_etags_gain_them_without_losing_predictions(warehouse, etag_stage):
    warehouse.sync_catalog("clothing_test", "s")
    warehouse.write_predictions(predictions(warehouse.unscored_rows("v1"), "v1"))
    _drop_etag_columns(warehouse)
    old = warehouse.read_catalog("clothing_test")
    assert old["ETAG"].isna().all() and (old["MODEL_VERSION"] == "v1").all()
    warehouse.refresh_stage("s")
    warehouse.sync_catalog("clothing_test", "s")  # fills the ETags; the files did not change
    table = warehouse.read_catalog("clothing_test")
    assert table["ETAG"].notna().all() and (table["MODEL_VERSION"] == "v1").all()
    assert warehouse.unscored_rows("v1").empty
    assert warehouse.sync_catalog("clothing_test", "s").updated == 0


HOSTILE = ["s; DROP TABLE clothing_test", "s'--", "1s", "s.x", "@s", "", "s" * 300]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused_before_any_sql(warehouse, stage, name):
    before = warehouse.read_catalog("clothing_test")
    for call in (
        lambda: warehouse.create_stage(name, "/tmp"),
        lambda: warehouse.refresh_stage(name),
        lambda: warehouse.sync_catalog("clothing_test", name),
        lambda: warehouse.file_urls(name, ["hat/hat_0.jpg"]),
        lambda: warehouse.sync_catalog(name, "s"),
        lambda: warehouse.read_catalog(name),
    ):
        with pytest.raises(InvalidIdentifierError):
            call()
    pd.testing.assert_frame_equal(warehouse.read_catalog("clothing_test"), before)


def test_unknown_stage_fails_clearly(warehouse):
    with pytest.raises(dg.Failure, match="stage 'nope' does not exist"):
        warehouse.sync_catalog("clothing_train", "nope")


def test_file_urls_keep_order_and_refuse_unsafe_paths(warehouse, stage):
    urls = warehouse.file_urls("s", ["shoes/shoes_0.jpg", "../outside.jpg", "hat/hat_0.jpg"])
    assert urls[1] is None
    assert urls[0].endswith("shoes/shoes_0.jpg") and urls[2].endswith("hat/hat_0.jpg")


def test_both_implementations_hold_the_same_catalogs(tmp_path):
    """The same stage history through DuckDB and through fakesnow gives equal tables."""
    root = tmp_path / "stage"
    make_stage(root, 2, classes=("hat", "shoes"))
    duck = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))

    def history(w: Warehouse) -> dict[str, list[dict]]:
        w.create_stage("s", str(root))
        w.refresh_stage("s")
        for table in ("clothing_train", "clothing_test"):
            w.sync_catalog(table, "s")
        w.write_predictions(predictions(w.unscored_rows("v1").iloc[:3], "v1"))
        return {t: comparable(w.read_catalog(t)) for t in ("clothing_train", "clothing_test")}

    write_image(root / "loose.jpg", COLOURS["hat"], seed=3)
    stamp = datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            "clothing_assets_tests.contract.test_warehouse_contract.datetime", _Frozen(stamp)
        )
        from_duckdb = history(duck)
        with fakesnow.patch(nop_regexes=NOP_REGEXES):
            fake = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="TEST_INT")
            from_fakesnow = history(fake)
    assert from_duckdb == from_fakesnow


class _Frozen:
    """`datetime` whose now() is fixed, so both histories write the same PRED_TIMESTAMP."""

    def __init__(self, stamp: datetime):
        self._stamp = stamp

    def now(self, tz=None):
        return self._stamp


def test_a_url_session_answers_the_urls_of_calls_outside_it(warehouse, stage):
    """A scoring step's `url_session` changes how often the warehouse is asked, never the
    URLs: the same ones, unsafe paths refused alike, sessions nested, an unknown stage
    refused by the time its URLs are asked for."""
    paths = ["hat/hat_0.jpg", "shoes/shoes_1.jpg", "../outside.jpg"]
    outside = warehouse.file_urls("s", paths)
    with warehouse.url_session("s"):
        inside = [warehouse.file_urls("s", [p])[0] for p in paths]
        with warehouse.url_session("s"):  # nested (the gallery inside a step)
            assert warehouse.file_urls("s", paths[:1]) == outside[:1]
        assert warehouse.file_urls("s", paths[:1]) == outside[:1]  # the outer one still serves
    assert inside == outside and outside[2] is None and outside[0].endswith("hat_0.jpg")
    with pytest.raises(dg.Failure, match="does not exist"), warehouse.url_session("nope"):
        warehouse.file_urls("nope", ["hat/hat_0.jpg"])


def test_duckdb_opens_its_file_once_per_url_session_not_per_batch(tmp_path, monkeypatch):
    """Opening and closing the file costs tens of ms: a step minting URLs for thousands of
    batches opens it once, and holds no connection meanwhile."""
    root = tmp_path / "stage"
    make_stage(root, 2, classes=("hat", "shoes"))
    duck = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
    duck.create_stage("s", str(root))
    opened: list[duckdb.DuckDBPyConnection] = []
    real_open = DuckDBWarehouse._open

    def counting(self):
        opened.append(real_open(self))
        return opened[-1]

    monkeypatch.setattr(DuckDBWarehouse, "_open", counting)
    with duck.url_session("s"), duck.url_session("test"):  # a stage no URL is asked of
        assert not opened  # is never read: a session opens the file at its first batch
        for _ in range(20):
            duck.file_urls("s", ["hat/hat_0.jpg"])
        assert len(opened) == 1
        with pytest.raises(duckdb.ConnectionException):  # closed: other processes may open it
            opened[0].execute("select 1")
    duck.file_urls("s", ["hat/hat_0.jpg"])  # outside a session: one connection per call
    assert len(opened) == 2
