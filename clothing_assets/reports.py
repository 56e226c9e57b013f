"""Metadata builders for the Dagster UI: tables from warehouse frames (figures: `plots`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

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


_FILE_COLUMNS = [
    ("FILE_URL", "VARCHAR", "the stage URL the file is read from (credentials redacted)"),
    ("RELATIVE_PATH", "VARCHAR", "the key: <class>/<file> inside the stage"),
    ("SIZE", "BIGINT", "bytes, from the stage listing"),
    ("LAST_MODIFIED", "TIMESTAMPTZ", "from the stage listing"),
    ("ETAG", "VARCHAR", "the object store's ETag; NULL for local files, which have none"),
]
_PREDICTION_COLUMNS = [
    ("PRED_TIMESTAMP", "TIMESTAMPTZ", "when the prediction was written"),
    ("TYPE", "VARCHAR", "the predicted class"),
    ("CONFIDENCE", "DOUBLE", "the softmax probability of TYPE"),
    ("MODEL_VERSION", "VARCHAR", "the registry version that made it (clothing_models)"),
]
_ERROR_COLUMN = (
    "ERROR",
    "VARCHAR",
    "why the file is not used (unreadable, unsafe, ...); NULL if fine",
)


def catalog_column_schema(table: str) -> dg.TableSchema:
    """The columns of a catalog table, for `dagster/column_schema` (the UI's Columns tab)."""
    columns = _FILE_COLUMNS + (_PREDICTION_COLUMNS if table == "clothing_test" else [])
    return dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description) for name, kind, description in columns]
        + [dg.TableColumn(*_ERROR_COLUMN)]
    )


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


def scoring_metadata(
    table: pd.DataFrame,
    classes: list[str],
    version: str,
    results: list[dict],
    *,
    written: int,
    seconds: float,
    shipped_to: int,
    load_seconds: dict[str, float],
    dashboard: str | None,
    gallery_urls: Callable[[Sequence[str]], Sequence[str | None]],
) -> dict:
    """What `clothing_predictions` shows: this run's figures, and the table's state under the
    champion (accuracy against the folder labels, confusion matrix, confident mistakes)."""
    from clothing_assets.ml.cluster import accuracy_against_folders, misclassified_gallery
    from clothing_assets.plots import confusion_matrix_png, png_markdown

    quality = accuracy_against_folders(table, classes, version)
    metadata = {
        "rows_scored": dg.MetadataValue.int(written),
        "rows_with_error": dg.MetadataValue.int(sum(1 for r in results if r["ERROR"])),
        "model_version": dg.MetadataValue.text(version),
        "accuracy": dg.MetadataValue.float(quality["accuracy"]),
        "labelled_rows": dg.MetadataValue.int(quality["labelled"]),
        "rows_in_table": dg.MetadataValue.int(len(table)),
        "table_rows_with_error": dg.MetadataValue.int(int(table["ERROR"].notna().sum())),
    }
    if results:  # a run that scored nothing adds no zeros to the UI's plots of these
        metadata.update({
            "images_per_second": dg.MetadataValue.float(
                round(len(results) / seconds, 1) if seconds > 0 else 0.0
            ),
            "per_worker": dg.MetadataValue.json(dict(Counter(r["WORKER"] for r in results))),
            "worker_devices": dg.MetadataValue.json({r["WORKER"]: r["DEVICE"] for r in results}),
            "model_shipped_to_workers": dg.MetadataValue.int(shipped_to),
            "model_load_seconds": dg.MetadataValue.json(
                {a: round(t, 2) for a, t in load_seconds.items()}
            ),
        })  # fmt: skip
    if dashboard:
        metadata["dask_dashboard"] = dg.MetadataValue.url(dashboard)
    gallery = misclassified_gallery(table, classes, version, gallery_urls)
    if gallery is not None:
        metadata["misclassified"] = dg.MetadataValue.md(png_markdown(gallery, "misclassified"))
    if quality["counts"] is not None:
        png = confusion_matrix_png(quality["counts"], classes, "test stage vs folder labels")
        metadata["confusion_matrix"] = dg.MetadataValue.md(png_markdown(png, "confusion matrix"))
    return metadata
