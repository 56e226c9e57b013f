"""SnowflakeWarehouse without an account: its SQL files, its transactions on fakesnow, its
connection handling, the configuration that selects it, and HTTP reads of presigned URLs."""

from __future__ import annotations

import re

import dagster as dg
import fakesnow
import pandas as pd
import pytest
import snowflake.connector
import sqlglot
from sqlglot import exp

from clothing_assets.environment import get_environment, resources_for
from clothing_assets.ml.data import load_images_minted
from clothing_assets.resources import snowflake_warehouse as sw
from clothing_assets.resources.warehouse import InvalidIdentifierError
from clothing_assets.sql import load_sql, sql_names
from clothing_assets.stage import reading as stage_fs
from clothing_assets_tests.contract.test_warehouse_contract import predictions
from clothing_assets_tests.support import COLOURS, make_stage, write_image
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    directory_table,
    fake_connection,
)
from clothing_assets_tests.support.presign_server import PresignServer, serve

SNOWFLAKE_SQL = sql_names("snowflake")
# statements the snowflake dialect of sqlglot keeps as an opaque command (still one statement)
OPAQUE = {"alter_stage_refresh"}


def as_sent(name: str) -> str:
    """The statement as the connector sends it: comment lines dropped, name tokens replaced,
    pyformat parameters interpolated client-side as quoted literals (numbers bare)."""
    text = sw.render(name, stage="CLOTHING_DATASET", storage_integration="MY_INTEGRATION")
    text = text.replace("%(expiry)s", "900").replace("__DIMENSION__", "1280")
    return re.sub(r"%\((\w+)\)s", lambda m: f"'{m.group(1).upper()}'", text)


def test_there_are_snowflake_statements_named_verb_object():
    assert len(SNOWFLAKE_SQL) >= 15
    for name in SNOWFLAKE_SQL:
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)+", name), name


@pytest.mark.parametrize("name", SNOWFLAKE_SQL)
def test_every_statement_parses_as_snowflake_and_holds_no_credentials(name):
    raw = load_sql("snowflake", name)
    for word in ("CREDENTIALS", "AWS_KEY_ID", "AWS_SECRET_KEY", "PASSWORD"):
        assert word not in raw.upper(), f"{name}.sql mentions {word}"
    [statement] = sqlglot.parse(as_sent(name), read="snowflake")  # exactly one statement
    assert statement is not None
    assert isinstance(statement, exp.Command) == (name in OPAQUE)


def test_stage_statements_reference_the_stage_only_through_validated_tokens():
    assert "DIRECTORY(@__STAGE__)" in load_sql("snowflake", "merge_clothing_train")
    assert "DIRECTORY(@__STAGE__)" in load_sql("snowflake", "merge_clothing_test")
    assert "GET_PRESIGNED_URL(@__STAGE__" in load_sql("snowflake", "select_presigned_urls")
    for bad in ("s; DROP TABLE x", "s'", "a.b", "1s"):
        with pytest.raises(InvalidIdentifierError):
            sw.render("create_stage", stage=bad, storage_integration="OK")
        with pytest.raises(InvalidIdentifierError):
            sw.render("create_stage", stage="ok", storage_integration=bad)
    with pytest.raises(ValueError, match="needs a stage"):
        sw.render("alter_stage_refresh")


@pytest.mark.parametrize(
    "name", ["merge_clothing_train", "merge_clothing_test", "summarize_stage_directory_state"]
)
def test_the_fakesnow_stand_in_swaps_only_the_directory_relation(name):
    real = sw.SnowflakeWarehouse(snowflake=fake_connection(), storage_integration="I")
    fake = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="I")
    production = real._reads_directory(name, "clothing_dataset")
    assert production.count("DIRECTORY(@clothing_dataset)") == 1
    assert fake._reads_directory(name, "clothing_dataset") == production.replace(
        "DIRECTORY(@clothing_dataset)", directory_table("clothing_dataset")
    )


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "stage"
    make_stage(root, 2, classes=("hat", "shoes"))
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        warehouse = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="INTEG")
        warehouse.create_stage("s", str(root))
        warehouse.sync_catalog("clothing_test", "s")
        yield warehouse


@pytest.fixture
def connections(monkeypatch):
    """Every connection SnowflakeResource opens (fakesnow's, inside its patch)."""
    opened = []
    connect = snowflake.connector.connect

    def spy(*args, **kwargs):
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(snowflake.connector, "connect", spy)
    return opened


def test_write_back_uses_a_fresh_temporary_table_checked_and_dropped(fake, monkeypatch):
    loaded, rendered = [], []
    write_pandas = sw.pandas_tools.write_pandas
    render = sw.render

    def spy_write(conn, frame, table, **kwargs):
        assert kwargs["use_logical_type"] is True and kwargs["auto_create_table"] is False
        loaded.append(table)
        return write_pandas(conn, frame, table, **kwargs)

    monkeypatch.setattr(sw.pandas_tools, "write_pandas", spy_write)
    monkeypatch.setattr(
        sw, "render", lambda name, **kw: rendered.append(name) or render(name, **kw)
    )
    rows = fake.unscored_rows("v1")
    assert fake.write_predictions(predictions(rows.iloc[:2], "v1")) == 2
    assert fake.write_predictions(predictions(rows.iloc[2:], "v1")) == 2
    assert len(set(loaded)) == 2 and all(
        re.fullmatch(r"CLOTHING_BATCH_[0-9A-F]{32}", t) for t in loaded
    )
    steps = [n for n in rendered if "temp" in n or "transaction" in n or n.startswith("update")]
    assert steps == 2 * [
        "create_temp_predictions",
        "begin_transaction",
        "update_clothing_test_predictions",
        "commit_transaction",
        "drop_temp_table",
    ]


def test_short_write_pandas_load_writes_nothing(fake, monkeypatch):
    before = fake.read_catalog("clothing_test")
    monkeypatch.setattr(sw.pandas_tools, "write_pandas", lambda *a, **k: (True, 1, 1, []))
    with pytest.raises(sw.WriteBackError, match="loaded 1 of 4 rows"):
        fake.write_predictions(predictions(fake.unscored_rows("v1"), "v1"))
    pd.testing.assert_frame_equal(fake.read_catalog("clothing_test"), before)


def test_failure_after_the_update_rolls_back_and_closes_the_connection(
    fake, monkeypatch, connections
):
    before = fake.read_catalog("clothing_test")
    render = sw.render

    def failing_commit(name, **kw):
        if name == "commit_transaction":
            return "SELECT * FROM NO_SUCH_TABLE_SO_COMMIT_FAILS"
        return render(name, **kw)

    monkeypatch.setattr(sw, "render", failing_commit)
    with pytest.raises(snowflake.connector.errors.ProgrammingError):
        fake.write_predictions(predictions(fake.unscored_rows("v1"), "v1"))
    monkeypatch.setattr(sw, "render", render)
    pd.testing.assert_frame_equal(fake.read_catalog("clothing_test"), before)
    assert connections[0].is_closed()


def test_connection_is_closed_when_the_body_raises(fake, connections):
    with pytest.raises(dg.Failure):
        fake.refresh_stage("missing_stage")
    with pytest.raises(RuntimeError, match="boom"), fake._connect():
        raise RuntimeError("boom")
    assert len(connections) == 2 and all(c.is_closed() for c in connections)


def test_a_url_session_mints_every_batch_on_one_connection(fake, connections, monkeypatch):
    """A scoring step opens one connection for its URLs, looks the stage up once, and mints
    each batch (up to PRESIGN_BATCH paths) in one GET_PRESIGNED_URL statement."""
    statements: list[int] = []
    presign = FakesnowWarehouse._presign

    def counting(self, cursor, stage, url, paths):
        statements.append(len(paths))
        return presign(self, cursor, stage, url, paths)

    monkeypatch.setattr(FakesnowWarehouse, "_presign", counting)
    monkeypatch.setattr(sw, "PRESIGN_BATCH", 3)
    paths = fake.read_catalog("clothing_test")["RELATIVE_PATH"].tolist()  # 4 files
    opened = len(connections)
    fake.file_urls("s", paths)
    assert len(connections) == opened + 1 and statements == [3, 1]  # alone: one per call

    with fake.url_session("s"):
        batches = [fake.file_urls("s", [p, "../outside.jpg"]) for p in paths]
        with fake.url_session("s"):  # nested (the gallery inside a step): the same one
            batches.append(fake.file_urls("s", paths[:2]))
        assert len(connections) == opened + 2 and not connections[-1].is_closed()
    assert connections[-1].is_closed()
    assert statements == [3, 1, 1, 1, 1, 1, 2]
    assert [b[1] for b in batches[:4]] == [None] * 4  # unsafe paths are never minted
    assert [b[0] for b in batches[:4]] == fake.file_urls("s", paths)
    with pytest.raises(dg.Failure, match="does not exist"), fake.url_session("nope"):
        pass


def test_query_tag_carries_the_dagster_run_id(tmp_path):
    warehouse = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="I")

    @dg.asset
    def tagged(warehouse: sw.SnowflakeWarehouse) -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={"tag": warehouse.query_tag()})

    result = dg.materialize([tagged], resources={"warehouse": warehouse})
    [event] = result.get_asset_materialization_events()
    assert result.run_id in event.materialization.metadata["tag"].value
    assert "password" not in warehouse.describe().lower()


def test_environment_selects_snowflake_by_configuration_alone(monkeypatch):
    for name in ("CLOTHING_WAREHOUSE", "SNOWFLAKE_ACCOUNT", "SNOWFLAKE_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    assert get_environment() == "local"
    monkeypatch.setenv("SNOWFLAKE_ACCOUNT", "xy12345")
    assert get_environment() == "snowflake"
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "local")
    assert get_environment() == "local"
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "snowflake")
    monkeypatch.setenv("SNOWFLAKE_PASSWORD", "not-in-any-output")

    warehouse = resources_for()["warehouse"]
    assert isinstance(warehouse, sw.SnowflakeWarehouse)
    snow = warehouse.snowflake
    # every account field is resolved by Dagster at run time, none read at import
    for field in ("account", "user", "password", "warehouse", "database", "schema_", "role"):
        assert isinstance(getattr(snow, field), dg.EnvVar), field
    assert isinstance(warehouse.storage_integration, dg.EnvVar)
    assert snow.login_timeout and snow.network_timeout
    assert snow.private_key_path is None

    monkeypatch.setenv("SNOWFLAKE_PRIVATE_KEY_PATH", "/keys/rsa_key.p8")
    keyed = resources_for()["warehouse"].snowflake
    assert keyed.password is None and keyed.private_key_path == dg.EnvVar(
        "SNOWFLAKE_PRIVATE_KEY_PATH"
    )


def test_http_reads_retry_transient_failures_and_flag_refused_urls(tmp_path, monkeypatch):
    monkeypatch.setattr(stage_fs.time, "sleep", lambda s: None)
    write_image(tmp_path / "st" / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    server = PresignServer(roots={"st": tmp_path / "st"}, flaky={("st", "hat/a.jpg")})
    with serve(server):
        good = server.mint("st", "hat/a.jpg", expires_at=9e9)
        assert stage_fs.read_bytes(good) == (tmp_path / "st" / "hat" / "a.jpg").read_bytes()
        assert server.statuses("st", "hat/a.jpg") == [503, 200]  # retried with the same URL
        expired = server.mint("st", "hat/a.jpg", expires_at=1.0)
        with pytest.raises(stage_fs.URLRefusedError) as refused:
            stage_fs.read_bytes(expired)
        assert stage_fs.url_refused(str(refused.value)) and "signature" not in str(refused.value)
    # nothing listening: bounded attempts, then an ordinary unreadable-file error
    with pytest.raises(OSError, match=f"after {stage_fs.HTTP_ATTEMPTS} attempts") as down:
        stage_fs.read_bytes(good)
    assert not stage_fs.url_refused(str(down.value))


def test_training_reads_mint_urls_per_batch_and_retry_refused_ones_once(tmp_path):
    root = tmp_path / "st"
    files = make_stage(root, 3, classes=("hat", "shoes"))
    paths = sorted(str(f.relative_to(root)) for f in files)
    server = PresignServer(roots={"st": root}, always_refuse={("st", paths[0])})
    minted: list[list[str]] = []

    def mint(batch):
        minted.append(list(batch))
        # the first batch's URLs are already expired when read
        return [server.mint("st", p, expires_at=1.0 if len(minted) == 1 else 9e9) for p in batch]

    with serve(server):
        decoded = load_images_minted(paths, mint, 16, batch_size=4)
    assert [len(b) for b in minted] == [4, 4, 2]  # batch 1, its re-mint, batch 2
    assert minted[1] == paths[:4]
    assert decoded.kept == list(range(1, 6)) and list(decoded.errors) == [0]
    assert stage_fs.url_refused(decoded.errors[0])
    assert server.statuses("st", paths[0]) == [403, 403]
