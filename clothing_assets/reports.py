"""Metadata builders for the Dagster UI: tables from warehouse frames, and what the training
and scoring steps show (figures: `plots`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg
import pandas as pd

if TYPE_CHECKING:  # torch loads with the step that trains, not with the code location
    import torch

    from clothing_assets.ml.data import LabelledImages
    from clothing_assets.ml.settings import TrainSettings
    from clothing_assets.ml.train import EpochStats, FitResult

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
    from clothing_assets.ml.scoring import DEFERRED_CHANGED, DEFERRED_TRANSIENT
    from clothing_assets.plots import confusion_matrix_png, png_markdown

    quality = accuracy_against_folders(table, classes, version)
    metadata = {
        "rows_scored": dg.MetadataValue.int(written),
        "rows_with_error": dg.MetadataValue.int(
            sum(1 for r in results if r["ERROR"] and not r.get("DEFERRED"))
        ),
        # read again by the next run: unreadable for the moment, or changed since the sync
        "rows_left_for_retry": dg.MetadataValue.int(
            sum(1 for r in results if r.get("DEFERRED") == DEFERRED_TRANSIENT)
        ),
        "rows_changed_since_sync": dg.MetadataValue.int(
            sum(1 for r in results if r.get("DEFERRED") == DEFERRED_CHANGED)
        ),
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


def accuracy_against_folders(frame: pd.DataFrame, classes: list[str], version: str) -> dict:
    """Accuracy of the current model's predictions against the folder labels it knows."""
    from clothing_assets.plots import confusion_matrix
    from clothing_assets.stage import class_of

    scored = frame[(frame["MODEL_VERSION"] == version) & frame["TYPE"].notna()].copy()
    scored["LABEL"] = scored["RELATIVE_PATH"].map(class_of)
    known = scored[scored["LABEL"].isin(classes)]
    if known.empty:
        return {"accuracy": float("nan"), "labelled": 0, "counts": None}
    index = {c: i for i, c in enumerate(classes)}
    counts = confusion_matrix(
        known["LABEL"].map(index).tolist(), known["TYPE"].map(index).tolist(), len(classes)
    )
    accuracy = float((known["LABEL"] == known["TYPE"]).mean())
    return {"accuracy": accuracy, "labelled": len(known), "counts": counts}


def misclassified_gallery(
    table: pd.DataFrame,
    classes: list[str],
    version: str,
    file_urls: Callable[[Sequence[str]], Sequence[str | None]],
) -> bytes | None:
    """A PNG grid of up to 12 of the most confident mistakes of `version`; `file_urls` mints
    the URLs the images are read from (the warehouse's, for the test stage)."""
    from clothing_assets.ml.images import ImageDecodeError, decode_image, resize_square
    from clothing_assets.plots import gallery_png
    from clothing_assets.stage import class_of, read_bytes

    scored = table[(table["MODEL_VERSION"] == version) & table["TYPE"].notna()].copy()
    scored["LABEL"] = scored["RELATIVE_PATH"].map(class_of)
    wrong = scored[scored["LABEL"].isin(classes) & (scored["LABEL"] != scored["TYPE"])]
    wrong = wrong.sort_values("CONFIDENCE", ascending=False).head(12)
    if wrong.empty:
        return None
    tiles = []
    for row, url in zip(
        wrong.itertuples(), file_urls(wrong["RELATIVE_PATH"].tolist()), strict=True
    ):
        try:
            image = resize_square(decode_image(read_bytes(url)), 128)
        except (ImageDecodeError, OSError):
            continue
        tiles.append((image, f"{row.LABEL} → {row.TYPE} ({row.CONFIDENCE:.2f})"))
    return gallery_png(tiles, "most confident mistakes (folder → predicted)") if tiles else None


def training_metadata(
    settings: TrainSettings,
    result: FitResult,
    data: LabelledImages,
    version: str,
    plots_dir: Path,
) -> dict[str, Any]:
    """What `trained_model` shows of training on `data`: the model, its history (table and
    curves), speed, the epoch plan and the validation confusion matrix; the figures are also
    written to `plots_dir`."""
    from clothing_assets.plots import png_markdown

    history, classes, val_labels = result.history, data.classes, data.labels[data.val]
    curves = _training_curves(history, plots_dir)
    best = next((h for h in history if h.epoch == result.best_epoch), None)
    total_images = sum(h.images for h in history)
    total_seconds = sum(h.seconds for h in history)
    return {
        "version": dg.MetadataValue.text(version),
        "architecture": dg.MetadataValue.text(settings.architecture),
        "weights": dg.MetadataValue.text(settings.weights),
        "image_size": dg.MetadataValue.int(settings.image_size),
        "crop_scale_min": dg.MetadataValue.float(result.crop_scale_min),
        "frozen_parameters": dg.MetadataValue.int(result.frozen_parameters),
        "classes": dg.MetadataValue.json(list(classes)),
        "epochs": dg.MetadataValue.int(len(history)),
        "best_epoch": dg.MetadataValue.int(result.best_epoch),
        "val_accuracy": dg.MetadataValue.float(
            float(best.val_acc) if best and best.val_acc is not None else float("nan")
        ),
        "train_images": dg.MetadataValue.int(len(data.train)),
        "val_images": dg.MetadataValue.int(len(val_labels)),
        "history": history_table(history),
        "training_curves": dg.MetadataValue.md(png_markdown(curves, "training curves")),
        "training_seconds": dg.MetadataValue.float(round(result.train_seconds, 1)),
        "train_images_per_second": dg.MetadataValue.float(
            round(total_images / total_seconds, 1) if total_seconds else 0.0
        ),
        "device": dg.MetadataValue.text(f"{result.device} ({result.amp_dtype})"),
        "resumed_from_step": dg.MetadataValue.int(result.resumed_from_step),
        "training_steps": dg.MetadataValue.int(result.steps),
        "config": dg.MetadataValue.json(asdict(settings)),
        "cpu_kind": dg.MetadataValue.text(result.cpu_kind),
        **result.plan.metadata(),
        **_validation_report(classes, val_labels, result.val_predictions, plots_dir),
    }


_HISTORY_COLUMNS = [
    ("epoch", "int"),
    ("train_loss", "float"),
    ("train_acc", "float"),
    ("val_loss", "float"),
    ("val_acc", "float"),
    ("lr", "float"),
    ("images_per_s", "float"),
]


def history_table(history: Sequence[EpochStats]) -> dg.TableMetadataValue:
    """One row per epoch: losses, accuracies, learning rate and speed."""
    records = [
        dg.TableRecord(
            {
                "epoch": h.epoch,
                "train_loss": round(h.train_loss, 4),
                "train_acc": round(h.train_acc, 4),
                "val_loss": None if h.val_loss is None else round(h.val_loss, 4),
                "val_acc": None if h.val_acc is None else round(h.val_acc, 4),
                "lr": float(f"{h.lr:.3g}"),
                "images_per_s": round(h.images_per_second, 1),
            }
        )
        for h in history
    ]
    schema = dg.TableSchema(columns=[dg.TableColumn(name, kind) for name, kind in _HISTORY_COLUMNS])
    return dg.TableMetadataValue(records=records, schema=schema)


def _training_curves(history: Sequence[EpochStats], plots_dir: Path) -> bytes:
    """The loss and accuracy curves as a PNG, also written to `plots_dir`."""
    from clothing_assets.plots import training_curves_png

    curves = training_curves_png(
        [h.epoch for h in history], [h.train_loss for h in history],
        [h.val_loss for h in history], [h.train_acc for h in history],
        [h.val_acc for h in history],
    )  # fmt: skip
    (plots_dir / "training_curves.png").write_bytes(curves)
    return curves


def _validation_report(
    classes: Sequence[str],
    val_labels: torch.Tensor,
    val_predictions: torch.Tensor | None,
    plots_dir: Path,
) -> dict[str, Any]:
    """The validation confusion matrix (also written to `plots_dir`) and per-class precision
    and recall; nothing without validation predictions."""
    from clothing_assets.plots import (
        confusion_matrix,
        confusion_matrix_png,
        per_class_scores,
        png_markdown,
    )  # fmt: skip

    if val_predictions is None or not len(val_labels):
        return {}
    counts = confusion_matrix(val_labels.tolist(), val_predictions.tolist(), len(classes))
    png = confusion_matrix_png(counts, classes, "validation confusion matrix")
    (plots_dir / "confusion_matrix_val.png").write_bytes(png)
    precision, recall = per_class_scores(counts)
    rows = ["| class | precision | recall | images |", "|---|---:|---:|---:|"]
    for name, p, r, n in zip(classes, precision, recall, counts.sum(axis=1), strict=True):
        rows.append(f"| {name} | {p:.2f} | {r:.2f} | {n} |")
    return {
        "confusion_matrix": dg.MetadataValue.md(png_markdown(png, "confusion matrix")),
        "per_class": dg.MetadataValue.md("\n".join(rows)),
    }


def challenger_inputs_metadata(
    *,
    decode_seconds: float,
    decode_cache: str,
    rows_with_error: int,
    compared_with: str | None,
    champion_accuracy: float | None,
) -> dict[str, Any]:
    """What `trained_model` shows beside its training: decoding, unusable rows, and the
    champion measured on the same validation rows."""
    return {
        "decode_seconds": dg.MetadataValue.float(round(decode_seconds, 1)),
        "decode_cache": dg.MetadataValue.text(decode_cache),
        "rows_with_error": dg.MetadataValue.int(rows_with_error),
        "compared_with_champion": dg.MetadataValue.text(compared_with or "none"),
        "champion_val_accuracy_same_rows": dg.MetadataValue.float(
            float("nan") if champion_accuracy is None else round(champion_accuracy, 4)
        ),
    }
