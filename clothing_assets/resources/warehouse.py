"""The warehouse interface the assets talk to; DuckDB and Snowflake implement it."""

import re
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


# A stage name becomes an identifier in a warehouse (a Snowflake stage, a key in DuckDB's
# clothing_stages): letters, digits and underscores, not starting with a digit.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class InvalidIdentifierError(ValueError):
    """A name from configuration that is not a plain SQL identifier; refused before any SQL."""


def validate_identifier(name: object, what: str = "stage name") -> str:
    """Return `name` if it is a plain identifier, else raise InvalidIdentifierError."""
    if not isinstance(name, str) or not IDENTIFIER.match(name):
        raise InvalidIdentifierError(
            f"invalid {what} {name!r}: use letters, digits and underscores, not starting with "
            "a digit (at most 255 characters)"
        )
    return name


def validate_table(table: object) -> CatalogTable:
    """Return `table` if it is one of CATALOG_TABLES, else raise InvalidIdentifierError."""
    if table not in CATALOG_TABLES:
        raise InvalidIdentifierError(
            f"unknown catalog table {table!r}; expected one of {', '.join(CATALOG_TABLES)}"
        )
    return table  # type: ignore[return-value]


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

    @abstractmethod
    def record_errors(self, table: CatalogTable, errors: pd.DataFrame) -> int:
        """Set ERROR for the (RELATIVE_PATH, ERROR) rows given; return rows updated."""

    def describe(self) -> str:
        """Where the warehouse is, for metadata and error messages (no secrets)."""
        return type(self).__name__
