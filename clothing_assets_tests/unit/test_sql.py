"""The SQL files (sql/): loaded by plain name only, one statement each."""

from __future__ import annotations

import pytest

from clothing_assets.sql import load_sql


@pytest.mark.parametrize("bad", ["../etc/passwd", "DROP TABLE x", "merge;catalog", ""])
def test_load_sql_refuses_anything_but_a_plain_name(bad):
    with pytest.raises(ValueError):
        load_sql("duckdb", bad)


def test_every_duckdb_statement_is_one_statement():
    import duckdb

    from clothing_assets.sql import sql_names

    names = sql_names("duckdb")
    assert len(names) >= 15
    for name in names:
        # an embedding length token becomes a number, as `duckdb_warehouse` renders it
        text = load_sql("duckdb", name).replace("__DIMENSION__", "8")
        statements = duckdb.extract_statements(text)
        assert len(statements) == 1, name
