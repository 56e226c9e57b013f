"""The perceptual-hash columns of clothing_embeddings behind the warehouse interface: stored
and read back exactly over all 64 bits, a row without them listed to be embedded again, and a
table made before the columns existed given them and kept working.

Like the rest of clothing_embeddings these skip on fakesnow, which cannot parse Snowflake's
VECTOR type; the Snowflake statements are parsed with sqlglot in test_snowflake_warehouse.py, and
the upgrade statements run on fakesnow against a table without the VECTOR column.
"""

from __future__ import annotations

import pytest

from clothing_assets.resources.warehouse import EmbeddingError, Warehouse
from clothing_assets_tests.contract.test_embeddings_contract import (  # noqa: F401 - fixtures
    VECTOR_SKIP,
    cataloged,
    rows_for,
)
from clothing_assets_tests.contract.test_warehouse_contract import (  # noqa: F401 - fixtures
    stage,
    warehouse,
)

EXTREMES = {"hat/hat_0.jpg": (-(2**63), 2**63 - 1), "hat/hat_1.jpg": (-1, 0)}
# clothing_embeddings as it was made before the hash columns (DuckDB)
TABLE_WITHOUT_HASHES = """
CREATE TABLE clothing_embeddings (
    RELATIVE_PATH VARCHAR NOT NULL, STAGE VARCHAR NOT NULL, MODEL_VERSION VARCHAR NOT NULL,
    SIZE BIGINT NOT NULL, LAST_MODIFIED TIMESTAMPTZ, ETAG VARCHAR, CONTENT_SHA256 VARCHAR,
    EMBEDDING FLOAT[2], ERROR VARCHAR, EMBEDDED_AT TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (STAGE, RELATIVE_PATH, MODEL_VERSION))
"""


def _hashed_rows(w: Warehouse, stage_name: str = "train") -> list[dict]:
    rows = rows_for(w, stage_name, "v1", {"x": [1.0, 0.0]})
    for row in rows:
        if row["RELATIVE_PATH"] in EXTREMES:
            row["PHASH"], row["PHASH_CENTER"] = EXTREMES[row["RELATIVE_PATH"]]
    return rows


def test_hashes_round_trip_exactly_and_a_hashless_row_is_embedded_again(cataloged):  # noqa: F811
    w = cataloged
    rows = _hashed_rows(w)
    unhashed = rows[-1]["RELATIVE_PATH"]
    rows[-1] = {**rows[-1], "PHASH": None, "PHASH_CENTER": None}
    errored = {**rows[-2], "EMBEDDING": None, "ERROR": "cannot decode", "PHASH": None,
               "PHASH_CENTER": None}  # fmt: skip
    assert w.write_embedding_rows([*rows[:-2], errored, rows[-1]]) == 4
    read = w.read_embeddings().set_index("RELATIVE_PATH")
    assert str(read["PHASH"].dtype) == "Int64"
    for path, (whole, centre) in EXTREMES.items():
        assert (read.loc[path, "PHASH"], read.loc[path, "PHASH_CENTER"]) == (whole, centre)
    assert read["PHASH"].isna().tolist().count(True) == 1
    # an embedding without hashes is listed again; an ERROR row is not
    assert w.unembedded_rows("train", "v1")["RELATIVE_PATH"].tolist() == [unhashed]
    again = [r for r in _hashed_rows(w) if r["RELATIVE_PATH"] == unhashed]
    assert w.write_embedding_rows(again) == 1
    assert w.unembedded_rows("train", "v1").empty
    assert w.read_embeddings()["PHASH"].notna().sum() == 3


def test_a_float_hash_column_is_refused_before_anything_is_written(cataloged):  # noqa: F811
    import pandas as pd

    w = cataloged
    frame = pd.DataFrame(_hashed_rows(w)[:1])
    w.prepare_embeddings(2)
    with pytest.raises(EmbeddingError, match="PHASH is a float column"):
        w.write_embeddings(frame.astype({"PHASH": "float64"}))
    assert w.read_embeddings().empty


def test_a_table_made_before_the_hash_columns_gains_them(cataloged):  # noqa: F811
    w = cataloged
    if type(w).__name__ != "DuckDBWarehouse":
        pytest.skip(f"the table without hashes is written in DuckDB's DDL; {VECTOR_SKIP}")
    catalog = w.read_catalog("clothing_train").sort_values("RELATIVE_PATH")
    with w._connect() as conn:
        conn.execute(TABLE_WITHOUT_HASHES)
        for r in catalog.head(2).itertuples():
            conn.execute(
                "INSERT INTO clothing_embeddings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
                [r.RELATIVE_PATH, "train", "v1", r.SIZE, r.LAST_MODIFIED, r.ETAG,
                 f"sha-{r.RELATIVE_PATH}", [1.0, 0.0], None],
            )  # fmt: skip
    old = w.read_embeddings()
    assert len(old) == 2 and old["PHASH"].isna().all()  # read with the columns added
    assert len(w.unembedded_rows("train", "v1")) == 4  # the two hashless rows too
    assert w.prepare_embeddings(2) is False  # same length: kept, not made again
    assert w.write_embedding_rows(_hashed_rows(w)) == 4
    assert w.unembedded_rows("train", "v1").empty
    read = w.read_embeddings().set_index("RELATIVE_PATH")
    assert read.loc["hat/hat_0.jpg", "PHASH"] == -(2**63) and read["PHASH"].notna().all()


def test_snowflake_gives_a_table_without_hashes_their_columns_once(warehouse):  # noqa: F811
    """The Snowflake upgrade statements on fakesnow, on a table without the VECTOR column
    fakesnow cannot parse: added when missing, and nothing when present."""
    if type(warehouse).__name__ != "FakesnowWarehouse":
        pytest.skip("the Snowflake statements; DuckDB's upgrade is tested above")
    with warehouse._connect() as conn:
        cursor = conn.cursor()
        cursor.execute("CREATE TABLE clothing_embeddings (RELATIVE_PATH VARCHAR)")
        warehouse._add_hash_columns(cursor)
        warehouse._add_hash_columns(cursor)
        described = warehouse._described(cursor)
    assert described is not None
    assert (described["PHASH"], described["PHASH_CENTER"]) == ("NUMBER(19,0)", "NUMBER(19,0)")
