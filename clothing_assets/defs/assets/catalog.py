"""The catalog tables: one row per stage file, synced without losing predictions.

A sync's data version is the stage data version of the files the catalog now holds
(`Warehouse.catalog_version`), and the sync records it as an observation of its stage too. A
file that lands while the sync runs is missing from that version: the stage observer's next
look differs from it and records the stage's version again, and the catalog's condition
(automation.py) asks for another sync while the two versions differ."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from clothing_assets.defs.assets.retries import TRANSIENT_FAILURES
from clothing_assets.defs.assets.stages import clothing_dataset, clothing_dataset_train
from clothing_assets.reports import catalog_column_schema
from clothing_assets.resources.warehouse import CatalogTable, StageSummary, Warehouse
from clothing_assets.stage import StageLocationError, StageResource, class_of, redact_url


def class_counts_markdown(frame: pd.DataFrame) -> str:
    """A markdown table of usable images per class folder."""
    usable = frame[frame["ERROR"].isna()]
    counts = usable["RELATIVE_PATH"].map(class_of).value_counts().sort_index()
    lines = ["| class | images |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in counts.items()]
    return "\n".join(lines)


def refresh_stage(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage: StageResource
) -> StageSummary:
    """Create the stage in the warehouse if missing and refresh its directory listing, which
    the sync then reads."""
    warehouse.create_stage(stage.name, stage.url)
    try:
        summary = warehouse.refresh_stage(stage.name, env_var=stage.env_var)
    except StageLocationError as exc:
        # a location that does not exist is configuration: retrying cannot make it appear
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    shown = redact_url(summary.url)
    context.log.info(
        f"stage {summary.name}: {summary.file_count} files, {summary.total_bytes:,} bytes "
        f"at {shown}"
    )
    if summary.file_count == 0:
        context.log.warning(f"stage {summary.name} at {shown} holds no files")
    return summary


def sync(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    table: CatalogTable,
    stage_asset: str,
    stage: StageResource,
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """Refresh `stage`'s listing, sync `table` from it and report the changes; then observe
    `stage_asset` at the version the catalog was synced to."""
    summary = refresh_stage(context, warehouse, stage)
    result = warehouse.sync_catalog(table, stage.name)
    context.log.info(
        f"{table}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.deleted} deleted; {result.rows} rows, {result.errors} with an ERROR"
    )
    frame = warehouse.read_catalog(table)
    synced = warehouse.catalog_version(table, frame)
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "inserted": dg.MetadataValue.int(result.inserted),
            "updated": dg.MetadataValue.int(result.updated),
            "deleted": dg.MetadataValue.int(result.deleted),
            "rows_with_error": dg.MetadataValue.int(result.errors),
            "images_per_class": dg.MetadataValue.md(class_counts_markdown(frame)),
            "dagster/column_schema": catalog_column_schema(table),
            "stage_files": dg.MetadataValue.int(summary.file_count),
            "stage_bytes": dg.MetadataValue.int(summary.total_bytes),
        },
        data_version=dg.DataVersion(synced),
    )
    yield dg.AssetObservation(
        stage_asset,
        metadata={"synced_by": dg.MetadataValue.text(table)},
        tags={DATA_VERSION_TAG: synced},
    )


@dg.asset(
    group_name="catalog",
    deps=[clothing_dataset_train],
    pool="clothing_warehouse",
    metadata={"dagster/column_schema": catalog_column_schema("clothing_train")},
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_train(
    context: dg.AssetExecutionContext, warehouse: Warehouse, train_stage: StageResource
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """clothing_train(FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ERROR), one row per file."""
    yield from sync(context, warehouse, "clothing_train", "clothing_dataset_train", train_stage)


@dg.asset(
    group_name="catalog",
    deps=[clothing_dataset],
    pool="clothing_warehouse",
    metadata={"dagster/column_schema": catalog_column_schema("clothing_test")},
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_test(
    context: dg.AssetExecutionContext, warehouse: Warehouse, test_stage: StageResource
) -> Iterator[dg.MaterializeResult | dg.AssetObservation]:
    """clothing_test(..., PRED_TIMESTAMP, TYPE, CONFIDENCE, MODEL_VERSION, ERROR); a changed
    file's prediction is cleared, unchanged rows keep theirs."""
    yield from sync(context, warehouse, "clothing_test", "clothing_dataset", test_stage)
