"""The embedded default warehouse: DuckDB through dagster-duckdb."""

import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr

from clothing_assets.resources.duckdb_review import DuckDBReview
from clothing_assets.resources.duckdb_transactions import transaction
from clothing_assets.resources.warehouse import (
    PREDICTION_COLUMNS,
    CatalogTable,
    StageSummary,
    SyncResult,
    Warehouse,
    WarehouseNotFoundError,
    missing_tables,
    validate_identifier,
    validate_table,
)
from clothing_assets.settings import ConfigurationError
from clothing_assets.sql import load_sql
from clothing_assets.stage import (
    configured_url,
    list_stage,
    redact_url,
    remember_url,
    stage_file_url,
)

_DDL = (
    "create_stages_table",
    "create_stage_directory_table",
    "alter_stage_directory_add_error",
    "create_clothing_train",
    "create_clothing_test",
    "alter_clothing_train_add_etag",
    "alter_clothing_test_add_etag",
    "create_clothing_models",
    "create_clothing_model_events",
    "create_clothing_near_duplicates",
    "create_clothing_label_issues",
    "create_clothing_label_fixes",
)
_PARAM = re.compile(r"\$([a-z_][a-z0-9_]*)")


# DuckDB's connect and close race on one file when threads of a process open and close it at
# once ("Unique file handle conflict: Cannot attach ..."): the model server's request threads
# do. Opening and closing (not the work in between) take turns within the process.
_OPEN_CLOSE = threading.Lock()


class WarehouseUnavailableError(dg.Failure):
    """The DuckDB file cannot be opened. Only a lock another process held past the wait may
    pass, so only that failure is retried by the steps' retry policy."""

    def __init__(self, message: str, *, locked: bool = False):
        super().__init__(message, allow_retries=locked)


class UnusableWarehouseError(WarehouseUnavailableError, ConfigurationError):
    """The DuckDB file cannot be used as configured (a folder, or not DuckDB):
    CLOTHING_DUCKDB_PATH has to change, so it is never retried."""

    def __init__(self, message: str):
        super().__init__(message, locked=False)


class DuckDBWarehouse(DuckDBReview, Warehouse):
    """Stages, catalogs and predictions in one DuckDB file.

    A stage is a row in `clothing_stages`; its directory listing (made with fsspec) lives in
    `clothing_stage_directory`, which plays the part of Snowflake's DIRECTORY(@stage).
    """

    duckdb: DuckDBResource
    env_var: str = Field(
        default="CLOTHING_DUCKDB_PATH", description="The variable users set to move the file."
    )
    lock_timeout_s: float = Field(
        default=120.0,
        description="How long to wait while another process (a concurrent run) holds the file.",
    )
    # stage -> its URL, read at the first `file_urls` of an open `url_session` (None until then)
    _session_urls: dict[str, str | None] = PrivateAttr(default_factory=dict)

    def _open(self) -> duckdb.DuckDBPyConnection:
        """Connect, waiting (with jittered backoff) only while another process holds the
        file's lock; a missing folder, a directory or a file that is not DuckDB fails at once."""
        database = self.duckdb.database
        config = {"custom_user_agent": "dagster", **self.duckdb.connection_config}
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                with _OPEN_CLOSE:
                    return duckdb.connect(
                        database=database, read_only=self.read_only, config=config
                    )
            except duckdb.IOException as exc:
                locked = "lock" in str(exc).lower()
                remaining = deadline - time.monotonic()
                detail = str(exc).splitlines()[0]
                if not locked:
                    raise UnusableWarehouseError(
                        f"cannot open the DuckDB warehouse {database!r}: it is not a usable "
                        f"DuckDB file ({detail}). Set {self.env_var} to a DuckDB file, or to a "
                        "path where one can be created."
                    ) from exc
                if remaining <= 0:
                    raise WarehouseUnavailableError(
                        f"cannot open the DuckDB warehouse {database!r}: it stayed locked by "
                        f"another process for {self.lock_timeout_s:g}s ({detail}): wait for "
                        "the other run or client to finish",
                        locked=True,
                    ) from exc
            time.sleep(min(remaining, delay * random.uniform(0.5, 1.5)))
            delay = min(delay * 2, 1.0)

    def _ensure_location(self) -> None:
        """Create the file's folder; read-only, require the file instead of creating it."""
        database = self.duckdb.database
        if database == ":memory:":
            return
        path = Path(database).expanduser()
        if self.read_only:
            if not path.exists():
                raise WarehouseNotFoundError(
                    f"the DuckDB warehouse {database!r} does not exist: materialize the assets "
                    f"to create it, or set {self.env_var} to the warehouse file"
                )
            return
        try:
            path.resolve().parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UnusableWarehouseError(
                f"cannot create the folder of the DuckDB file {database!r}: {exc}. "
                f"Set {self.env_var} to a writable path."
            ) from exc

    @contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        self._ensure_location()
        conn = self._open()
        # closed on errors too, so that a failed step never keeps the file locked
        try:
            if self.read_only:
                self._require_tables(conn)
            else:
                for name in _DDL:
                    conn.execute(load_sql("duckdb", name))
            yield conn
        finally:
            with _OPEN_CLOSE:
                conn.close()

    def _require_tables(self, conn: duckdb.DuckDBPyConnection) -> None:
        """A read-only connection creates no table: one that is missing is a warehouse the
        assets have not been materialized into."""
        present = conn.execute(load_sql("duckdb", "select_table_names")).fetchall()
        missing = missing_tables([row[0] for row in present])
        if missing:
            raise WarehouseNotFoundError(
                f"the DuckDB file {self.duckdb.database!r} holds no {', '.join(missing)} table: "
                f"materialize the assets into it, or set {self.env_var} to the warehouse file"
            )

    def describe(self) -> str:
        return f"DuckDB file {self.duckdb.database}"

    def create_stage(self, name: str, url: str) -> None:
        validate_identifier(name)
        with self._connect() as conn:
            # stored without credentials; reads take the real URL from the stage's config
            remember_url(name, url)
            conn.execute(load_sql("duckdb", "upsert_stage"), {"name": name, "url": redact_url(url)})

    def _stage_url(self, conn: duckdb.DuckDBPyConnection, name: str) -> str:
        row = conn.execute(load_sql("duckdb", "select_stage"), {"name": name}).fetchone()
        if row is None:
            raise dg.Failure(f"stage {name!r} does not exist: materialize it first")
        return configured_url(name, row[0])

    def refresh_stage(self, name: str, *, env_var: str | None = None) -> StageSummary:
        validate_identifier(name)
        with self._connect() as conn:
            url = self._stage_url(conn, name)
        # List outside the connection: a slow object store must not hold the file lock.
        stage_listing = list_stage(url, env_var=env_var)
        with self._connect() as conn:
            with transaction(conn):
                conn.execute(load_sql("duckdb", "delete_stale_stage_directory"), {"stage": name})
                conn.register("stage_listing", stage_listing)
                conn.execute(load_sql("duckdb", "insert_new_stage_directory"), {"stage": name})
                conn.unregister("stage_listing")
                conn.execute(load_sql("duckdb", "update_stage_refreshed"), {"name": name})
            count, total = conn.execute(
                load_sql("duckdb", "summarize_stage_directory"), {"stage": name}
            ).fetchone()
        return StageSummary(
            name=name, url=redact_url(url), file_count=int(count), total_bytes=int(total)
        )

    def stage_file_count(self, name: str) -> int:
        with self._connect() as conn:
            self._stage_url(conn, name)
            (count, _) = conn.execute(
                load_sql("duckdb", "summarize_stage_directory"), {"stage": name}
            ).fetchone()
        return int(count)

    def sync_catalog(self, table: CatalogTable, stage: str) -> SyncResult:
        validate_table(table)  # one of the two catalogs, so `merge_<table>` names a SQL file
        validate_identifier(stage)
        with self._connect() as conn:
            self._stage_url(conn, stage)
            actions = conn.execute(
                load_sql("duckdb", f"merge_{table}"), {"stage": stage}
            ).fetchall()
            frame = self._read(conn, table)
        done = [a[0] for a in actions]
        return SyncResult(
            inserted=done.count("INSERT"),
            updated=done.count("UPDATE"),
            deleted=done.count("DELETE"),
            rows=len(frame),
            errors=int(frame["ERROR"].notna().sum()),
        )

    @staticmethod
    def _read(conn: duckdb.DuckDBPyConnection, table: CatalogTable) -> pd.DataFrame:
        return conn.execute(load_sql("duckdb", f"select_{table}")).df()

    def read_catalog(self, table: CatalogTable) -> pd.DataFrame:
        validate_table(table)
        with self._connect() as conn:
            return self._read(conn, table)

    def unscored_rows(self, model_version: str) -> pd.DataFrame:
        with self._connect() as conn:
            return conn.execute(
                load_sql("duckdb", "select_unscored_test_rows"), {"model_version": model_version}
            ).df()

    @contextmanager
    def url_session(self, stage: str) -> Iterator[None]:
        """Within it, `file_urls(stage, ...)` reads the stage's URL once, at its first call, and
        builds every later batch's URLs on it without opening the file: opening and closing
        it cost about 35 ms, half a core's worth while a scoring step mints URLs batch after
        batch. No connection stays open, so other processes can use the file meanwhile."""
        validate_identifier(stage)
        if stage in self._session_urls:  # nested: the outer session serves
            yield
            return
        self._session_urls[stage] = None
        try:
            yield
        finally:
            del self._session_urls[stage]

    def file_urls(self, stage: str, relative_paths: Sequence[str]) -> list[str | None]:
        validate_identifier(stage)
        base = self._session_urls.get(stage)
        if base is None:
            with self._connect() as conn:
                base = self._stage_url(conn, stage)
            if stage in self._session_urls:
                self._session_urls[stage] = base
        return [stage_file_url(base, p) for p in relative_paths]

    def write_predictions(self, predictions: pd.DataFrame) -> int:
        missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
        if missing:
            raise ValueError(f"predictions lack columns {sorted(missing)}")
        scored_batch = predictions[PREDICTION_COLUMNS]
        with self._connect() as conn, transaction(conn):
            conn.register("scored_batch", scored_batch)
            conn.execute(load_sql("duckdb", "create_temp_predictions"))
            conn.unregister("scored_batch")
            (updated,) = conn.execute(
                load_sql("duckdb", "update_clothing_test_predictions")
            ).fetchone()
            conn.execute(load_sql("duckdb", "drop_temp_predictions"))
        return int(updated)

    def record_errors(self, table: CatalogTable, errors: pd.DataFrame) -> int:
        if table != "clothing_train":
            raise ValueError("record_errors supports clothing_train; test errors come with scoring")
        if errors.empty:
            return 0
        with self._connect() as conn, transaction(conn):
            conn.register("catalog_errors", errors[["RELATIVE_PATH", "ERROR"]])
            conn.execute(load_sql("duckdb", "create_temp_catalog_errors"))
            conn.unregister("catalog_errors")
            (updated,) = conn.execute(load_sql("duckdb", "update_clothing_train_errors")).fetchone()
            conn.execute(load_sql("duckdb", "drop_temp_catalog_errors"))
        return int(updated)

    @staticmethod
    def _bind(name: str, params: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
        """The statement and exactly the parameters it names (DuckDB refuses extra ones)."""
        text = load_sql("duckdb", name)
        wanted = set(_PARAM.findall(text))
        return text, {k: v for k, v in (params or {}).items() if k in wanted}

    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with self._connect() as conn, transaction(conn):
            for name, params in statements:
                conn.execute(*self._bind(name, params))

    def _select(self, name: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._connect() as conn:
            return conn.execute(*self._bind(name, params)).df()
