"""One DuckDB file opened from many threads of one process at once (the model server answers
thumbnail and search requests in threads): every call succeeds. DuckDB's own connect and close
race on one file ("Unique file handle conflict: Cannot attach ..."), so the warehouse opens and
closes its connections one at a time within a process."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from dagster_duckdb import DuckDBResource

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse


def test_many_threads_open_the_same_file_at_once(tmp_path):
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(tmp_path / "w.duckdb")))
    warehouse.embeddings_dimension()  # the file and its tables exist
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: warehouse.embeddings_dimension(), range(1500)))
    assert answers == [None] * 1500
