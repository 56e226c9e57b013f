"""A step that meets a DuckDB file locked by another process is retried and succeeds; a file
that is not a database fails at once, unretried."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clothing_assets_tests.support import (
    materialize,
    read_table,
)

_HOLD_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.mark.timeout(120)
def test_a_catalog_sync_that_meets_a_locked_warehouse_is_retried_and_succeeds(local_env):
    from dagster_duckdb import DuckDBResource

    from clothing_assets.environment import resources_for
    from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse

    # the warehouse file exists (the lock below needs it): a first sync made it
    first = materialize(["clothing_dataset_train", "clothing_train"], None)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    # another process holds the file for 4 s; this warehouse gives up waiting after 1 s
    impatient = DuckDBWarehouse(
        duckdb=DuckDBResource(database=str(local_env.duckdb)), lock_timeout_s=1.0
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(local_env.duckdb), "4"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = materialize(
            ["clothing_train"], None, resources={**resources_for(), "warehouse": impatient}
        )
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried and all(e.step_key == "clothing_train" for e in retried)
    assert "locked by another process" in str(retried[0].event_specific_data.error)
    assert len(read_table(local_env, "clothing_train")) == 18


def test_an_unusable_warehouse_file_is_not_retried(local_env):
    local_env.duckdb.parent.mkdir(parents=True)
    local_env.duckdb.write_bytes(b"not a database" * 100)
    result = materialize(["clothing_dataset_train", "clothing_train"], None)
    assert not result.success
    kinds = [e.event_type_value for e in result.all_events]
    assert "STEP_FAILURE" in kinds and "STEP_UP_FOR_RETRY" not in kinds
