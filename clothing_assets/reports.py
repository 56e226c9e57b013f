"""Metadata builders for the Dagster UI: tables from warehouse frames (figures: `plots`)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

REGISTRY_COLUMNS = [
    ("version", "text", "VERSION"),
    ("status", "text", "STATUS"),
    ("val_accuracy", "float", "VAL_ACCURACY"),
    ("champion_on_same_rows", "float", "CHAMPION_VAL_ACCURACY"),
    ("compared_with", "text", "COMPARED_WITH"),
    ("created", "text", "CREATED_AT"),
    ("promoted", "text", "PROMOTED_AT"),
    ("rows_scored", "int", "ROWS_SCORED"),
    ("stored", "bool", "DELETED_AT"),
    ("reason", "text", "REASON"),
]


def _cell(kind: str, column: str, value):
    if column == "DELETED_AT":
        return bool(pd.isna(value))
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if kind == "float":
        return round(float(value), 4)
    if kind == "int":
        return int(value)
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value)


def registry_table(models: pd.DataFrame) -> dg.TableMetadataValue:
    """The registry as a table, newest first."""
    records = [
        dg.TableRecord({name: _cell(kind, column, row[column]) for name, kind, column in
                        REGISTRY_COLUMNS})
        for _, row in models.iloc[::-1].iterrows()
    ]  # fmt: skip
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind) for name, kind, _ in REGISTRY_COLUMNS]
    )
    return dg.MetadataValue.table(records=records, schema=schema)
