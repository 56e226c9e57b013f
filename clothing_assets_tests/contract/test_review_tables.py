"""The near-duplicate pairs, the label-review queue and the label decisions behave the same on
DuckDB and on SnowflakeWarehouse over fakesnow (the production Snowflake SQL)."""

from __future__ import annotations

from collections.abc import Iterator

import fakesnow
import pandas as pd
import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.warehouse import InvalidIdentifierError, Warehouse
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)


@pytest.fixture(params=["duckdb", "fakesnow"])
def warehouse(request, tmp_path) -> Iterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
        return
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        yield FakesnowWarehouse(snowflake=fake_connection(), storage_integration="TEST_INTEGRATION")


PAIRS = pd.DataFrame({
    "PATH_A": ["hat/a.jpg", "hat/b.jpg"], "STAGE_A": ["train", "train"],
    "PATH_B": ["hat/a2.jpg", "hat/b.jpg"], "STAGE_B": ["train", "test"],
    "SIMILARITY": [0.97, 1.0], "KIND": ["near", "exact"],
})  # fmt: skip


def test_pairs_are_replaced_whole_and_read_most_similar_first(warehouse):
    assert warehouse.read_results("clothing_near_duplicates").empty
    assert warehouse.replace_results("clothing_near_duplicates", PAIRS) == 2
    read = warehouse.read_results("clothing_near_duplicates")
    assert read["PATH_B"].tolist() == ["hat/b.jpg", "hat/a2.jpg"]
    assert read["SIMILARITY"].tolist() == pytest.approx([1.0, 0.97])
    assert read["KIND"].tolist() == ["exact", "near"]
    # a second pass replaces, never adds to, the first
    warehouse.replace_results("clothing_near_duplicates", PAIRS.iloc[:1])
    assert warehouse.read_results("clothing_near_duplicates")["PATH_B"].tolist() == ["hat/a2.jpg"]
    warehouse.replace_results("clothing_near_duplicates", PAIRS.iloc[:0])
    assert warehouse.read_results("clothing_near_duplicates").empty


def test_label_issues_read_in_rank_order_with_numeric_types(warehouse):
    issues = pd.DataFrame({
        "RELATIVE_PATH": ["hat/x.jpg", "shoes/y.jpg"], "GIVEN": ["hat", "shoes"],
        "SUGGESTED": ["shoes", "hat"], "SCORE": [0.6, 0.9], "RANK": [2, 1],
    })  # fmt: skip
    warehouse.replace_results("clothing_label_issues", issues)
    read = warehouse.read_results("clothing_label_issues")
    assert read["RELATIVE_PATH"].tolist() == ["shoes/y.jpg", "hat/x.jpg"]
    assert read["RANK"].tolist() == [1, 2]
    assert read["SCORE"].dtype == "float64"


def test_a_frame_lacking_a_column_or_an_unknown_table_is_refused(warehouse):
    with pytest.raises(ValueError, match="KIND"):
        warehouse.replace_results("clothing_near_duplicates", PAIRS.drop(columns="KIND"))
    with pytest.raises(InvalidIdentifierError, match="unknown result table"):
        warehouse.replace_results("clothing_train; DROP TABLE x", PAIRS)


def test_every_label_decision_is_kept_and_the_newest_one_counts(warehouse):
    warehouse.record_label_decision("hat/x.jpg", "fix", "shoes", "hat", decided_by="ana")
    warehouse.record_label_decision("hat/x.jpg", "fix", "pants", "shoes", decided_by="ana")
    warehouse.record_label_decision("shoes/y.jpg", "keep", "shoes", "shoes")
    every = warehouse.read_label_fixes()
    assert len(every) == 3
    assert every["DECIDED_AT"].is_monotonic_increasing
    assert every["DECIDED_AT"].iloc[0].utcoffset().total_seconds() == 0
    first = every[every["RELATIVE_PATH"] == "hat/x.jpg"].iloc[0]
    assert (first["LABEL"], first["PREVIOUS_LABEL"], first["DECIDED_BY"]) == ("shoes", "hat", "ana")
    latest = warehouse.latest_label_decisions().set_index("RELATIVE_PATH")
    assert latest.loc["hat/x.jpg", "LABEL"] == "pants"
    assert latest.loc["shoes/y.jpg", "DECISION"] == "keep"
    with pytest.raises(ValueError, match="unknown label decision"):
        warehouse.record_label_decision("hat/x.jpg", "drop", "hat", "hat")
