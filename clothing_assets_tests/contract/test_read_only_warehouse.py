"""A warehouse opened read-only (the command line's listings) creates and changes nothing: one
the assets were never materialized into is a WarehouseNotFoundError naming what is missing,
on DuckDB and on SnowflakeWarehouse over fakesnow."""

from __future__ import annotations

import duckdb
import fakesnow
import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.warehouse import WarehouseNotFoundError
from clothing_assets.settings import ConfigurationError
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)


def test_duckdb_read_only_needs_the_file_and_its_tables(tmp_path):
    path = tmp_path / "sub" / "clothing.duckdb"

    def warehouse(read_only: bool) -> DuckDBWarehouse:
        return DuckDBWarehouse(duckdb=DuckDBResource(database=str(path)), read_only=read_only)

    with pytest.raises(WarehouseNotFoundError, match="does not exist.*CLOTHING_DUCKDB_PATH"):
        warehouse(True).read_models()
    assert not path.parent.exists()

    path.parent.mkdir()
    duckdb.connect(str(path)).close()  # a DuckDB file without the project's tables
    with pytest.raises(WarehouseNotFoundError, match="clothing_train, clothing_test"):
        warehouse(True).read_catalog("clothing_test")
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SHOW TABLES").fetchall() == []

    assert warehouse(False).read_models().empty  # a run creates the tables
    assert warehouse(True).read_models().empty
    assert warehouse(True).read_catalog("clothing_test").empty


def test_snowflake_read_only_creates_no_table():
    with fakesnow.patch(nop_regexes=NOP_REGEXES):

        def warehouse(read_only: bool) -> FakesnowWarehouse:
            return FakesnowWarehouse(
                snowflake=fake_connection(), storage_integration="X", read_only=read_only
            )

        with pytest.raises(ConfigurationError, match="holds no clothing_train.*SNOWFLAKE_SCHEMA"):
            warehouse(True).read_models()
        with pytest.raises(WarehouseNotFoundError):  # still none: nothing was created
            warehouse(True).read_catalog("clothing_test")
        assert warehouse(False).read_models().empty
        assert warehouse(True).read_catalog("clothing_test").empty
