"""Snowflake statements and their answers: each `.sql` file of `clothing_assets/sql/snowflake/`
rendered with validated names, and cursors' results in the shapes the DuckDB warehouse gives."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pandas as pd

from clothing_assets.resources.warehouse import validate_identifier
from clothing_assets.sql import load_sql

DIALECT = "snowflake"
STAGE_TOKEN = "__STAGE__"
INTEGRATION_TOKEN = "__STORAGE_INTEGRATION__"
DIRECTORY_TOKEN = f"DIRECTORY(@{STAGE_TOKEN})"
DIMENSION_TOKEN = "__DIMENSION__"

TIMESTAMPS = (
    "LAST_MODIFIED",
    "PRED_TIMESTAMP",
    "CREATED_AT",
    "PROMOTED_AT",
    "DELETED_AT",
    "CHANGED_AT",
    "EMBEDDED_AT",
    "DECIDED_AT",
)


def render(name: str, *, stage: str | None = None, storage_integration: str | None = None) -> str:
    """The statement `clothing_assets/sql/snowflake/<name>.sql`, without its comment lines,
    with its name tokens replaced by validated identifiers; a token left without a name is an
    error."""
    # whole-line comments document the files and are not sent
    text = "\n".join(
        line for line in load_sql(DIALECT, name).splitlines() if not line.lstrip().startswith("--")
    )
    if stage is not None:
        text = text.replace(STAGE_TOKEN, validate_identifier(stage))
    if storage_integration is not None:
        text = text.replace(
            INTEGRATION_TOKEN, validate_identifier(storage_integration, "storage integration")
        )
    if STAGE_TOKEN in text or INTEGRATION_TOKEN in text:
        raise ValueError(f"statement {name} needs a stage or storage-integration name")
    return text


def render_dimension(name: str, dimension: int) -> str:
    """`render(name)` with its `__DIMENSION__` token (a VECTOR's length) replaced by
    `dimension`, a positive integer."""
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ValueError(f"an embedding length must be a positive integer, got {dimension!r}")
    text = render(name)
    if DIMENSION_TOKEN not in text:
        raise ValueError(f"statement {name} has no {DIMENSION_TOKEN} to replace")
    return text.replace(DIMENSION_TOKEN, str(dimension))


def frame_of(cursor: Any) -> pd.DataFrame:
    """The cursor's result as a frame with the same dtypes DuckDB gives (UTC timestamps)."""
    columns = [d[0].upper() for d in cursor.description]
    frame = pd.DataFrame(cursor.fetchall(), columns=columns)
    for column in TIMESTAMPS:
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    if "SIZE" in frame:
        frame["SIZE"] = frame["SIZE"].astype("int64")
    for column in ("IMAGE_SIZE", "VAL_ROWS", "TRAIN_ROWS", "ROWS_SCORED", "RANK"):
        if column in frame:
            frame[column] = frame[column].astype("int64")
    numbers = ("CONFIDENCE", "VAL_ACCURACY", "CHAMPION_VAL_ACCURACY", "SIMILARITY", "SCORE")
    for column in numbers:
        if column in frame:
            frame[column] = frame[column].astype("float64")
    return frame


def state_of(row: Sequence[Any]) -> tuple[int, str]:
    """(file count, change key) of one summarize_*_state row, normalised so that the directory
    and a catalog table give equal keys for equal files (the count and bytes as integers, the
    newest time in UTC)."""
    count, total, newest, files_hash = row
    newest = "" if newest is None else pd.Timestamp(newest).tz_convert("UTC").isoformat()
    summary = f"{int(count)}|{int(total or 0)}|{newest}|{files_hash}"
    return int(count), hashlib.sha256(summary.encode()).hexdigest()


def counts_of(cursor: Any) -> dict[str, int]:
    """Snowflake's MERGE and UPDATE answer one row with a column 'number of rows inserted' /
    'updated' / 'deleted' for each kind of change the statement can make."""
    row = cursor.fetchone() or ()
    names = [d[0].lower() for d in cursor.description or ()]
    return {
        name.removeprefix("number of rows "): int(value or 0)
        for name, value in zip(names, row, strict=False)
        if name.startswith("number of rows ")
    }
