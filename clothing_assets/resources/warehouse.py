"""The warehouse interface the assets talk to; DuckDB and Snowflake implement it."""

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.resources.identifiers import (  # noqa: F401 (importable from here)
    IDENTIFIER,
    InvalidIdentifierError,
    validate_identifier,
)
from clothing_assets.resources.review_tables import (  # noqa: F401 (importable from here)
    EMBEDDING_COLUMNS,
    EMBEDDING_STAGES,
    LABEL_DECISIONS,
    MAX_NEAREST,
    NEAREST_COLUMNS,
    READ_EMBEDDING_COLUMNS,
    RESULT_COLUMNS,
    EmbeddingError,
    ReviewTables,
    embedding_dimension_of,
    query_vector,
    validate_embedding_stage,
    with_labels,
)
from clothing_assets.settings import ConfigurationError
from clothing_assets.stage import (
    StageResource,
    catalog_matches,
    list_stage,
    listing_digest,
)

CatalogTable = Literal["clothing_train", "clothing_test"]
CATALOG_TABLES: tuple[CatalogTable, ...] = ("clothing_train", "clothing_test")

# Columns of the frame handed to `write_predictions`: SIZE, LAST_MODIFIED and ETAG are the
# file's as it was read for scoring, so that a prediction of a since-changed file is refused.
PREDICTION_COLUMNS = [
    "RELATIVE_PATH",
    "SIZE",
    "LAST_MODIFIED",
    "ETAG",
    "TYPE",
    "CONFIDENCE",
    "PRED_TIMESTAMP",
    "MODEL_VERSION",
    "ERROR",
]


def validate_table(table: object) -> CatalogTable:
    """Return `table` if it is one of CATALOG_TABLES, else raise InvalidIdentifierError."""
    if table not in CATALOG_TABLES:
        raise InvalidIdentifierError(
            f"unknown catalog table {table!r}; expected one of {', '.join(CATALOG_TABLES)}"
        )
    return table  # type: ignore[return-value]


MODEL_STATUSES = ("champion", "challenger", "rejected", "retired")
# what a read-only connection needs to find (it creates nothing)
REQUIRED_TABLES = (*CATALOG_TABLES, "clothing_models", "clothing_model_events")


class WarehouseNotFoundError(ConfigurationError):
    """A warehouse opened only to read holds none of the project's tables (or not all): the
    assets were never materialized into it, or the settings point somewhere else."""


def missing_tables(present: Sequence[str]) -> list[str]:
    """The REQUIRED_TABLES that are not among the table names `present` (any case)."""
    names = {name.lower() for name in present}
    return [table for table in REQUIRED_TABLES if table not in names]


@dataclass(frozen=True)
class ModelRecord:
    """What the registry keeps of a stored model version when it is registered."""

    version: str
    sha256: str
    uri: str
    created_at: datetime
    architecture: str
    image_size: int
    classes: list[str]
    val_accuracy: float | None
    val_rows: int
    train_rows: int
    catalog_fingerprint: str
    compared_with: str | None = None
    champion_val_accuracy: float | None = None

    def params(self) -> dict[str, Any]:
        values = asdict(self)
        values["classes"] = json.dumps(list(self.classes))
        return values


@dataclass(frozen=True)
class StageSummary:
    """A stage after a refresh."""

    name: str
    url: str
    file_count: int
    total_bytes: int


@dataclass(frozen=True)
class StageState:
    """A stage sensor's cheap look at a stage: its file count and a key that changes when a file
    is added, removed or changed (path, size, last-modified, ETag). `listing` is the listing
    itself when the look was one (fsspec); `exists` is False for a stage the warehouse does not
    hold yet (its sync creates it)."""

    files: int
    key: str
    exists: bool = True
    listing: pd.DataFrame | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SyncResult:
    """What one catalog sync changed, and the table's state afterwards."""

    inserted: int
    updated: int
    deleted: int
    rows: int
    errors: int


class Warehouse(dg.ConfigurableResource, ReviewTables, ABC):
    """Catalog tables of the images in the stages, and the predictions written next to them;
    the embeddings, review results and label decisions come with `ReviewTables`."""

    read_only: bool = Field(
        default=False,
        description="Only read (the command line's listings): create and change nothing; a "
        "warehouse the assets were not materialized into is a ConfigurationError.",
    )

    @abstractmethod
    def create_stage(self, name: str, url: str) -> None:
        """Create the stage `name` pointing at `url` if it does not exist."""

    @abstractmethod
    def refresh_stage(self, name: str, *, env_var: str | None = None) -> StageSummary:
        """Refresh the stage's directory listing and summarise it.

        `env_var` names the variable that sets the stage's location, for error messages.
        """

    @abstractmethod
    def stage_file_count(self, name: str) -> int:
        """Files in the stage's directory as of its last refresh."""

    @abstractmethod
    def sync_catalog(self, table: CatalogTable, stage: str) -> SyncResult:
        """Make `table` hold one row per file of `stage`, keeping unchanged rows as they are."""

    @abstractmethod
    def read_catalog(self, table: CatalogTable) -> pd.DataFrame:
        """Return the whole catalog table, ordered by RELATIVE_PATH."""

    @abstractmethod
    def unscored_rows(self, model_version: str) -> pd.DataFrame:
        """Rows of clothing_test that `model_version` has not scored yet."""

    @abstractmethod
    def file_urls(self, stage: str, relative_paths: Sequence[str]) -> list[str | None]:
        """URLs a worker can read the files from, minted now (call shortly before use).

        None for a path whose reading would leave the stage (see `stage.stage_file_url`);
        readers record such a row with an ERROR and never open anything for it.
        """

    @abstractmethod
    def write_predictions(self, predictions: pd.DataFrame) -> int:
        """Write PREDICTION_COLUMNS back into clothing_test atomically; return rows updated."""

    def write_prediction_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """`write_predictions` of scoring results (dicts as `ml.scoring.score_batch` returns
        them, with PREDICTION_COLUMNS among their keys); return rows updated. A row that lacks
        one of those keys is refused before anything is written: in a frame of many rows its
        ETAG would read as NULL, miss its catalog row, and be dropped without a word."""
        lacking = [r for r in rows if not all(c in r for c in PREDICTION_COLUMNS)]
        if lacking:
            missing = sorted(set(PREDICTION_COLUMNS) - set(lacking[0]))
            raise ValueError(
                f"{len(lacking)} prediction rows lack columns {missing} (the first: "
                f"{lacking[0].get('RELATIVE_PATH')!r}); build results with "
                "ml.scoring.blank_result"
            )
        return self.write_predictions(pd.DataFrame(rows)[PREDICTION_COLUMNS])

    @abstractmethod
    def record_errors(self, table: CatalogTable, errors: pd.DataFrame) -> int:
        """Set ERROR for the (RELATIVE_PATH, ERROR) rows given; return rows updated."""

    def describe(self) -> str:
        """Where the warehouse is, for metadata and error messages (no secrets)."""
        return type(self).__name__

    @contextmanager
    def url_session(self, stage: str) -> Iterator[None]:
        """A scope (a scoring step) within which `file_urls(stage, ...)` may share one
        connection; a warehouse whose URLs cost no round trip has nothing to share."""
        validate_identifier(stage)
        yield

    # -- what a stage sensor reads on each tick ------------------------------------------

    def stage_state(self, stage: StageResource) -> StageState:
        """The state of `stage` for its sensor. By default the stage's location is listed with
        fsspec (names, sizes, times, ETags; never a file's bytes); a warehouse that keeps the
        stage's directory itself answers from there instead. Raises StageLocationError when
        the location cannot be listed."""
        listing = list_stage(stage.url, env_var=stage.env_var)
        return StageState(files=len(listing), key=listing_digest(listing), listing=listing)

    def catalog_version(self, table: CatalogTable, catalog: pd.DataFrame | None = None) -> str:
        """The stage data version of the files `table` holds: the `stage_state(...).key` of a
        stage holding exactly those files. `catalog` is the table when the caller has just read
        it. A sync records it, so that a file the sync did not see still differs from it."""
        frame = self.read_catalog(validate_table(table)) if catalog is None else catalog
        return listing_digest(frame)

    def catalog_holds(self, table: CatalogTable, state: StageState) -> bool:
        """Whether `table` already holds exactly the files `state` saw (a fresh sensor then
        has nothing to request)."""
        if state.listing is None:
            return False
        return catalog_matches(state.listing, self.read_catalog(validate_table(table)))

    def table_names(self) -> list[str]:
        """The names of the tables the warehouse holds (its schema's)."""
        return [str(name) for name in self._select("select_table_names").iloc[:, 0]]

    # -- two primitives each backend implements; the registry below is written once ------

    @abstractmethod
    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Run the named statements (SQL files of this backend's dialect), in order, in one
        transaction: all take effect or none."""

    @abstractmethod
    def _select(self, name: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The rows of the named query."""

    # -- the model registry: clothing_models and its history, clothing_model_events -------

    def register_model(self, record: ModelRecord, *, run_id: str | None = None) -> bool:
        """Register a stored version as `challenger` (its row and its first event in one
        transaction). A version already registered (the same bytes trained again) keeps its
        status unless it was rejected or retired, gets the new comparison, and is no longer
        marked deleted. Returns whether the version is new."""
        now = datetime.now(UTC)
        existing = self.model(record.version)
        if existing is None:
            params = {**record.params(), "status": "challenger", "run_id": run_id}
            params["reason"] = "registered: awaiting the promotion decision"
            self._run(
                [
                    ("insert_clothing_model", params),
                    ("insert_clothing_model_event", self._event(record.version, "challenger",
                                                                 params["reason"], now, run_id)),
                ]
            )  # fmt: skip
            return True
        params = {**record.params(), "run_id": run_id}
        statements = [("update_clothing_model_comparison", params)]
        if existing["STATUS"] in ("rejected", "retired"):
            reason = "trained again: awaiting the promotion decision"
            statements += self._status_statements(record.version, "challenger", reason, now, run_id)
        self._run(statements)
        return False

    def change_model_status(
        self, version: str, status: str, reason: str, *, run_id: str | None = None
    ) -> None:
        """Set `version`'s STATUS and one-line REASON, and record the change, in one
        transaction; making it `champion` retires the current champion in the same one."""
        if status not in MODEL_STATUSES:
            raise ValueError(f"unknown model status {status!r}; one of {MODEL_STATUSES}")
        self._run(self._status_statements(version, status, reason, datetime.now(UTC), run_id))

    def mark_model_deleted(self, version: str, reason: str, *, run_id: str | None = None) -> None:
        """Record that `version`'s file was deleted from the model store (by retention)."""
        now = datetime.now(UTC)
        status = (self.model(version) or {}).get("STATUS", "retired")
        self._run(
            [
                ("update_clothing_model_deleted", {"version": version, "changed_at": now}),
                ("insert_clothing_model_event", self._event(version, status, reason, now, run_id)),
            ]
        )

    def read_models(self) -> pd.DataFrame:
        """The registry, oldest first, with ROWS_SCORED: clothing_test rows naming each."""
        return self._select("select_clothing_models")

    def read_model_events(self) -> pd.DataFrame:
        """Every status change, oldest first."""
        return self._select("select_clothing_model_events")

    def model(self, version: str) -> dict[str, Any] | None:
        """The registry row of `version`, or None."""
        models = self.read_models()
        rows = models[models["VERSION"] == version]
        return None if rows.empty else rows.iloc[0].to_dict()

    def champion(self) -> dict[str, Any] | None:
        """The registry row of the champion, or None before the first promotion."""
        models = self.read_models()
        rows = models[models["STATUS"] == "champion"]
        return None if rows.empty else rows.iloc[0].to_dict()

    @staticmethod
    def _event(version, status, reason, changed_at, run_id) -> dict[str, Any]:
        return {
            "version": version,
            "status": status,
            "reason": reason,
            "changed_at": changed_at,
            "run_id": run_id,
        }

    def _status_statements(self, version, status, reason, changed_at, run_id) -> list:
        event = self._event(version, status, reason, changed_at, run_id)
        statements = []
        if status == "champion":
            retired = {**event, "reason": f"retired: {version} became the champion"}
            statements += [
                ("insert_retired_model_events", retired),
                ("update_retired_champion", retired),
            ]
        return statements + [
            ("update_clothing_model_status", event),
            ("insert_clothing_model_event", event),
        ]
