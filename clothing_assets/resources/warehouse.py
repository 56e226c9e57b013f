"""The warehouse interface the assets talk to; DuckDB and Snowflake implement it."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import dagster as dg
import pandas as pd

CatalogTable = Literal["clothing_train", "clothing_test"]
CATALOG_TABLES: tuple[CatalogTable, ...] = ("clothing_train", "clothing_test")

# Columns of the frame handed to `write_predictions`.
PREDICTION_COLUMNS = [
    "RELATIVE_PATH",
    "SIZE",
    "LAST_MODIFIED",
    "TYPE",
    "CONFIDENCE",
    "PRED_TIMESTAMP",
    "MODEL_VERSION",
    "ERROR",
]


@dataclass(frozen=True)
class StageSummary:
    """A stage after a refresh."""

    name: str
    url: str
    file_count: int
    total_bytes: int


@dataclass(frozen=True)
class SyncResult:
    """What one catalog sync changed, and the table's state afterwards."""

    inserted: int
    updated: int
    deleted: int
    rows: int
    errors: int


class Warehouse(dg.ConfigurableResource, ABC):
    """Catalog tables of the images in the stages, and the predictions written next to them."""

    @abstractmethod
    def create_stage(self, name: str, url: str) -> None:
        """Create the stage `name` pointing at `url` if it does not exist."""

    @abstractmethod
    def refresh_stage(self, name: str, *, env_var: str | None = None) -> StageSummary:
        """Refresh the stage's directory listing and summarise it.

        `env_var` names the variable that sets the stage's location, for error messages.
        """

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
    def file_urls(self, stage: str, relative_paths: Sequence[str]) -> list[str]:
        """URLs a worker can read the files from, minted now (call shortly before use)."""

    @abstractmethod
    def write_predictions(self, predictions: pd.DataFrame) -> int:
        """Write PREDICTION_COLUMNS back into clothing_test atomically; return rows updated."""

    @abstractmethod
    def record_errors(self, table: CatalogTable, errors: pd.DataFrame) -> int:
        """Set ERROR for the (RELATIVE_PATH, ERROR) rows given; return rows updated."""

    def describe(self) -> str:
        """Where the warehouse is, for metadata and error messages (no secrets)."""
        return type(self).__name__
