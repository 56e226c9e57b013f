"""Test-only: SnowflakeWarehouse on fakesnow (the fake Snowflake connector over DuckDB).

fakesnow runs the Snowflake SQL of `clothing_assets/sql/snowflake/` for real: CREATE STAGE, SHOW
STAGES, the table DDL, both catalog MERGEs, the TEMPORARY-table + write_pandas + MERGE
write-back, the transactions and `IDENTIFIER(%(...)s)` binding. It lacks four statements, and
this subclass stands in for exactly those, nothing else:

- `ALTER STAGE ... REFRESH` (`_refresh_directory`): the stage's local folder is listed with
  `stage_fs.list_stage` into a plain table with DIRECTORY()'s columns;
- `DIRECTORY(@stage)` (`_directory_relation`): the summary and the catalog MERGEs read that
  table instead; the rest of each statement is the production text, unchanged;
- `GET_PRESIGNED_URL` (`_presign`): the URL comes from `mint_url` (a local path by default, an
  HTTP URL in the presigned-URL expiry test);
- `ALTER SESSION SET QUERY_TAG = ...`: a fakesnow no-op (`NOP_REGEXES`).

Those four are checked only for syntax here (sqlglot, test_snowflake_warehouse.py) and run for
real only in the live test (`-m snowflake`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster_snowflake import SnowflakeResource
from snowflake.connector import pandas_tools

from clothing_assets.resources.snowflake_warehouse import SnowflakeWarehouse
from clothing_assets.resources.warehouse import validate_identifier
from clothing_assets.stage import list_stage, stage_file_url

NOP_REGEXES = [r"(?s)^(--[^\n]*\n|\s)*ALTER SESSION SET QUERY_TAG = "]

_DIRECTORY_DDL = """CREATE OR REPLACE TABLE IDENTIFIER(%(name)s) (
    RELATIVE_PATH VARCHAR, SIZE NUMBER(38, 0), LAST_MODIFIED TIMESTAMP_TZ, MD5 VARCHAR,
    ETAG VARCHAR, FILE_URL VARCHAR)"""


def directory_table(stage: str) -> str:
    return f"FAKESNOW_DIRECTORY_{validate_identifier(stage).upper()}"


class FakesnowWarehouse(SnowflakeWarehouse):
    """SnowflakeWarehouse with the three stage statements fakesnow lacks stood in for."""

    def _refresh_directory(self, cursor: Any, stage: str, url: str) -> None:
        listing = list_stage(url)[["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG", "FILE_URL"]]
        listing = listing.assign(MD5=None)
        for column in ("RELATIVE_PATH", "ETAG", "FILE_URL", "MD5"):
            listing[column] = listing[column].astype("string")
        cursor.execute(_DIRECTORY_DDL, {"name": directory_table(stage)})
        if len(listing):
            ok, _, rows, _ = pandas_tools.write_pandas(
                cursor._conn, listing, directory_table(stage), use_logical_type=True
            )
            assert ok and rows == len(listing)

    def _directory_relation(self, stage: str) -> str:
        return directory_table(stage)

    def _presign(self, cursor: Any, stage: str, url: str, paths: Sequence[str]) -> list[str]:
        return [self.mint_url(stage, url, p) for p in paths]

    def mint_url(self, stage: str, base: str, relative_path: str) -> str:
        return stage_file_url(base, relative_path)


def fake_connection() -> SnowflakeResource:
    """A SnowflakeResource whose connect() fakesnow answers (inside `fakesnow.patch()`)."""
    return SnowflakeResource(
        account="fakesnow",
        user="fakesnow",
        password="fakesnow",
        database="CLOTHING",
        schema="PUBLIC",
        login_timeout=10,
        network_timeout=30,
    )
