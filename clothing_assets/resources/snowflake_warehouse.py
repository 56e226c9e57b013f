"""The production warehouse: Snowflake through dagster-snowflake's SnowflakeResource.

A stage is a Snowflake external stage with a directory table (`DIRECTORY = (ENABLE = TRUE)`)
over the images' bucket; a storage integration holds the cloud credentials, so none ever
appear in SQL, code, logs or metadata. Every statement is a file in
`clothing_assets/sql/snowflake/`.

Names. Table names are fixed; temporary tables and other bound names go through
`IDENTIFIER(%(...)s)`. A stage reference (`@stage` in `DIRECTORY(@stage)`, `GET_PRESIGNED_URL`,
`ALTER STAGE`) cannot be bound, so the stage and storage-integration names from configuration
pass `validate_identifier` and only then replace the `__STAGE__` / `__STORAGE_INTEGRATION__`
tokens of a statement (see `render`).

Three statements touch a stage's directory or its files and are isolated in one method each,
so that tests without an account can stand in for exactly those (fakesnow has none of them):
`_refresh_directory` (ALTER STAGE ... REFRESH), `_directory_relation` (the `DIRECTORY(@stage)`
that the summary and the catalog MERGEs read from) and `_presign` (GET_PRESIGNED_URL).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
from dagster_snowflake import SnowflakeResource
from pydantic import Field, PrivateAttr
from snowflake.connector import pandas_tools

from clothing_assets.resources.snowflake_review import SnowflakeReview
from clothing_assets.resources.snowflake_sql import (
    DIRECTORY_TOKEN,
    STAGE_TOKEN,
    counts_of,
    frame_of,
    render,
    state_of,
)
from clothing_assets.resources.warehouse import (
    PREDICTION_COLUMNS,
    CatalogTable,
    StageState,
    StageSummary,
    SyncResult,
    Warehouse,
    WarehouseNotFoundError,
    missing_tables,
    validate_identifier,
    validate_table,
)
from clothing_assets.stage import StageResource, redact_url, unsafe_reason

_DDL = (
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
# paths per GET_PRESIGNED_URL statement (bound as one JSON array; far below Snowflake's limits)
PRESIGN_BATCH = 1000


class WriteBackError(RuntimeError):
    """write_pandas did not load every row of a batch; nothing was written."""


class SnowflakeWarehouse(SnowflakeReview, Warehouse):
    """Stages, catalogs and predictions in a Snowflake database and schema."""

    snowflake: SnowflakeResource
    storage_integration: str = Field(
        description="Storage integration the stages use (holds the bucket's credentials)."
    )
    presign_expiry_seconds: int = Field(
        default=900,
        ge=60,
        le=3600,
        description="Lifetime of a presigned URL; minted per batch, just before it is read.",
    )

    _run_id: str | None = PrivateAttr(default=None)
    _tables_ready: bool = PrivateAttr(default=False)
    # stage name -> (cursor, stage URL) of an open `url_session`, and the lock its cursor needs
    _minting: dict[str, tuple[Any, str]] = PrivateAttr(default_factory=dict)
    _minting_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._run_id = context.run.run_id if context.run else None

    def query_tag(self) -> str:
        return json.dumps({"app": "clothing_assets", "dagster_run_id": self._run_id or "none"})

    def describe(self) -> str:
        return (
            f"Snowflake {self.snowflake.database or '?'}.{self.snowflake.schema_ or '?'} "
            f"(account {self.snowflake.account or '?'})"
        )

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        """A connection tagged with the run id, with the tables in place. SnowflakeResource
        commits and closes when the body succeeds; when it raises, any open transaction is
        rolled back and the connection closed here before the error goes on."""
        with self.snowflake.get_connection() as conn:
            try:
                cursor = conn.cursor()
                cursor.execute(render("alter_session_query_tag"), {"tag": self.query_tag()})
                if not self._tables_ready:
                    self._prepare_tables(cursor)
                    self._tables_ready = True
                yield conn
            except BaseException:
                try:
                    conn.rollback()
                finally:
                    conn.close()
                raise

    def _prepare_tables(self, cursor: Any) -> None:
        """Create the tables; read-only, require them instead."""
        if not self.read_only:
            for name in _DDL:
                cursor.execute(render(name))
            return
        cursor.execute(render("select_table_names"))
        missing = missing_tables([row[0] for row in cursor.fetchall()])
        if missing:
            raise WarehouseNotFoundError(
                f"{self.describe()} holds no {', '.join(missing)} table: materialize the assets "
                "into it, or set SNOWFLAKE_DATABASE and SNOWFLAKE_SCHEMA to where they were "
                "materialized"
            )

    # -- the three stage statements (see the module docstring) ---------------------------

    def _refresh_directory(self, cursor: Any, stage: str, url: str) -> None:
        """ALTER STAGE ... REFRESH: the directory table re-reads the bucket."""
        cursor.execute(render("alter_stage_refresh", stage=stage))

    def _directory_relation(self, stage: str) -> str:
        """The relation the summary and the catalog MERGEs read the stage's files from."""
        return f"DIRECTORY(@{validate_identifier(stage)})"

    def _presign(self, cursor: Any, stage: str, url: str, paths: Sequence[str]) -> list[str]:
        """One GET_PRESIGNED_URL per path, in one query, in the order given."""
        cursor.execute(
            render("select_presigned_urls", stage=stage),
            {"paths": json.dumps(list(paths)), "expiry": int(self.presign_expiry_seconds)},
        )
        urls = [row[1] for row in cursor.fetchall()]
        if len(urls) != len(paths):
            raise RuntimeError(f"GET_PRESIGNED_URL answered {len(urls)} URLs for {len(paths)}")
        return urls

    # -----------------------------------------------------------------------------------

    def _reads_directory(self, name: str, stage: str) -> str:
        text = render(name, stage=stage)
        directory = DIRECTORY_TOKEN.replace(STAGE_TOKEN, stage)
        return text.replace(directory, self._directory_relation(stage))

    def _stage_url(self, cursor: Any, name: str) -> str:
        validate_identifier(name)
        cursor.execute(render("show_stages"), {"name": name})
        columns = [d[0].lower() for d in cursor.description]
        for row in cursor.fetchall():
            record = dict(zip(columns, row, strict=False))
            if str(record.get("name", "")).upper() == name.upper():
                return str(record.get("url") or "")
        raise dg.Failure(f"stage {name!r} does not exist: materialize it first")

    def create_stage(self, name: str, url: str) -> None:
        validate_identifier(name)
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(
                render("create_stage", stage=name, storage_integration=self.storage_integration),
                {"url": url},
            )
            current = self._stage_url(cursor, name)
        # IF NOT EXISTS keeps an existing stage as it is, even when its URL is no longer ours
        if current.rstrip("/") != url.rstrip("/"):
            raise dg.Failure(
                f"stage {name} exists with URL {redact_url(current)}, but the configured URL is "
                f"{redact_url(url)}; CREATE STAGE IF NOT EXISTS does not change it. Point it at "
                f"the new location (ALTER STAGE {name} SET URL = '<the configured URL>') or "
                f"drop it (DROP STAGE {name}) and materialize the stage again."
            )

    def _summary(self, cursor: Any, name: str) -> tuple[int, int]:
        cursor.execute(self._reads_directory("summarize_stage_directory", name))
        count, total = cursor.fetchone()
        return int(count), int(total)

    def refresh_stage(self, name: str, *, env_var: str | None = None) -> StageSummary:
        validate_identifier(name)
        with self._connect() as conn:
            cursor = conn.cursor()
            url = self._stage_url(cursor, name)
            self._refresh_directory(cursor, name, url)
            count, total = self._summary(cursor, name)
        return StageSummary(name=name, url=url, file_count=count, total_bytes=total)

    def stage_state(self, stage: StageResource) -> StageState:
        """The stage's directory table, refreshed, summarised in one query: the sensor asks the
        warehouse, never the bucket. A stage not created yet is reported absent (its sync
        creates it)."""
        name = validate_identifier(stage.name)
        with self._connect() as conn:
            cursor = conn.cursor()
            try:
                url = self._stage_url(cursor, name)
            except dg.Failure:
                return StageState(files=0, key=f"absent:{name}", exists=False)
            self._refresh_directory(cursor, name, url)
            cursor.execute(self._reads_directory("summarize_stage_directory_state", name))
            files, key = state_of(cursor.fetchone())
        return StageState(files=files, key=key)

    def catalog_holds(self, table: CatalogTable, state: StageState) -> bool:
        return state.exists and self.catalog_version(table) == state.key

    def catalog_version(self, table: CatalogTable, catalog: pd.DataFrame | None = None) -> str:
        """The catalog's summary (`summarize_<table>_state`), which equals the stage
        directory's for the same files; one query, whatever `catalog` holds."""
        validate_table(table)  # one of the two catalogs, so the name is a SQL file
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(render(f"summarize_{table}_state"))
            return state_of(cursor.fetchone())[1]

    def stage_file_count(self, name: str) -> int:
        with self._connect() as conn:
            cursor = conn.cursor()
            self._stage_url(cursor, name)
            return self._summary(cursor, name)[0]

    def sync_catalog(self, table: CatalogTable, stage: str) -> SyncResult:
        validate_table(table)  # one of the two catalogs, so `merge_<table>` names a SQL file
        validate_identifier(stage)
        with self._connect() as conn:
            cursor = conn.cursor()
            url = self._stage_url(cursor, stage)
            self._refresh_directory(cursor, stage, url)  # the listing is current at every sync
            cursor.execute(self._reads_directory(f"merge_{table}", stage))
            counts = counts_of(cursor)
            frame = self._read(cursor, table)
        return SyncResult(
            inserted=counts.get("inserted", 0),
            updated=counts.get("updated", 0),
            deleted=counts.get("deleted", 0),
            rows=len(frame),
            errors=int(frame["ERROR"].notna().sum()),
        )

    @staticmethod
    def _read(cursor: Any, table: CatalogTable) -> pd.DataFrame:
        cursor.execute(render(f"select_{table}"))
        return frame_of(cursor)

    def read_catalog(self, table: CatalogTable) -> pd.DataFrame:
        validate_table(table)
        with self._connect() as conn:
            return self._read(conn.cursor(), table)

    def unscored_rows(self, model_version: str) -> pd.DataFrame:
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(render("select_unscored_test_rows"), {"model_version": model_version})
            return frame_of(cursor)

    @contextmanager
    def url_session(self, stage: str) -> Iterator[None]:
        """Within it, `file_urls(stage, ...)` mints on one connection, opened here, with the
        stage's URL looked up once: a scoring step mints a batch's URLs per statement without
        a login and a SHOW STAGES per batch."""
        validate_identifier(stage)
        if stage in self._minting:  # nested: the outer session serves
            yield
            return
        with self._connect() as conn:
            cursor = conn.cursor()
            self._minting[stage] = (cursor, self._stage_url(cursor, stage))
            try:
                yield
            finally:
                del self._minting[stage]

    def file_urls(self, stage: str, relative_paths: Sequence[str]) -> list[str | None]:
        validate_identifier(stage)
        paths = list(relative_paths)
        safe = [p for p in paths if unsafe_reason(p) is None]
        minted: dict[str, str] = {}
        if safe and stage in self._minting:
            cursor, url = self._minting[stage]
            with self._minting_lock:  # one statement at a time on the session's cursor
                minted = self._mint(cursor, stage, url, safe)
        elif safe:
            with self._connect() as conn:
                cursor = conn.cursor()
                minted = self._mint(cursor, stage, self._stage_url(cursor, stage), safe)
        return [minted.get(p) for p in paths]

    def _mint(self, cursor: Any, stage: str, url: str, paths: list[str]) -> dict[str, str]:
        """`paths` -> presigned URL, PRESIGN_BATCH paths per GET_PRESIGNED_URL statement."""
        minted: dict[str, str] = {}
        for start in range(0, len(paths), PRESIGN_BATCH):
            part = paths[start : start + PRESIGN_BATCH]
            minted.update(zip(part, self._presign(cursor, stage, url, part), strict=True))
        return minted

    def _apply_batch(
        self,
        create: str,
        apply: str,
        frame: pd.DataFrame,
        *,
        apply_text: str | None = None,
        first: Sequence[str] = (),
    ) -> int:
        """Load `frame` into a fresh TEMPORARY table with write_pandas (its return value
        checked), then run the statements `first` (without parameters) and the statement
        `apply` from it in one transaction; the table is dropped in any case. A failure
        anywhere leaves the target tables as they were."""
        batch = f"CLOTHING_BATCH_{uuid.uuid4().hex.upper()}"  # per call: runs never collide
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(render(create), {"batch": batch})
            failed = True
            try:
                success, _chunks, loaded, _output = pandas_tools.write_pandas(
                    conn,
                    frame,
                    batch,
                    quote_identifiers=True,
                    auto_create_table=False,
                    use_logical_type=True,
                )
                if not success or loaded != len(frame):
                    raise WriteBackError(
                        f"write_pandas loaded {loaded} of {len(frame)} rows (success={success}); "
                        "nothing was written"
                    )
                cursor.execute(render("begin_transaction"))
                try:
                    for name in first:
                        cursor.execute(render(name))
                    cursor.execute(apply_text or render(apply), {"batch": batch})
                    counts = counts_of(cursor)
                    updated = counts.get("updated", 0) + counts.get("inserted", 0)
                    cursor.execute(render("commit_transaction"))
                except BaseException:
                    cursor.execute(render("rollback_transaction"))
                    raise
                failed = False
            finally:
                try:
                    cursor.execute(render("drop_temp_table"), {"batch": batch})
                except Exception:
                    if not failed:  # else the first error is the one worth reporting
                        raise
        return updated

    def write_predictions(self, predictions: pd.DataFrame) -> int:
        missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
        if missing:
            raise ValueError(f"predictions lack columns {sorted(missing)}")
        if predictions.empty:
            return 0
        frame = predictions[PREDICTION_COLUMNS].reset_index(drop=True).copy()
        frame["SIZE"] = frame["SIZE"].astype("int64")
        frame["CONFIDENCE"] = pd.to_numeric(frame["CONFIDENCE"], errors="raise").astype("float64")
        for column in ("LAST_MODIFIED", "PRED_TIMESTAMP"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        for column in ("RELATIVE_PATH", "ETAG", "TYPE", "MODEL_VERSION", "ERROR"):
            frame[column] = frame[column].astype("string")  # typed even when all NULL
        return self._apply_batch(
            "create_temp_predictions", "update_clothing_test_predictions", frame
        )

    def record_errors(self, table: CatalogTable, errors: pd.DataFrame) -> int:
        if table != "clothing_train":
            raise ValueError("record_errors supports clothing_train; test errors come with scoring")
        if errors.empty:
            return 0
        frame = errors[["RELATIVE_PATH", "ERROR"]].reset_index(drop=True).astype("string")
        return self._apply_batch(
            "create_temp_catalog_errors", "update_clothing_train_errors", frame
        )

    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(render("begin_transaction"))
            try:
                for name, params in statements:
                    cursor.execute(render(name), params)
                cursor.execute(render("commit_transaction"))
            except BaseException:
                cursor.execute(render("rollback_transaction"))
                raise

    def _select(self, name: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        with self._connect() as conn:
            cursor = conn.cursor()
            cursor.execute(render(name), params or {})
            return frame_of(cursor)
