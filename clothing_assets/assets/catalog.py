"""The catalog tables: one row per stage file, synced without losing predictions."""

import dagster as dg
import pandas as pd

from clothing_assets.assets.retries import TRANSIENT_FAILURES
from clothing_assets.assets.stages import clothing_dataset, clothing_dataset_train
from clothing_assets.reports import catalog_column_schema
from clothing_assets.resources.warehouse import CatalogTable, Warehouse
from clothing_assets.stage import StageResource, class_of


def class_counts_markdown(frame: pd.DataFrame) -> str:
    """A markdown table of usable images per class folder."""
    usable = frame[frame["ERROR"].isna()]
    counts = usable["RELATIVE_PATH"].map(class_of).value_counts().sort_index()
    lines = ["| class | images |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in counts.items()]
    return "\n".join(lines)


def sync(
    context: dg.AssetExecutionContext, warehouse: Warehouse, table: CatalogTable, stage: str
) -> dg.MaterializeResult:
    """Sync `table` from `stage` and report the changes."""
    result = warehouse.sync_catalog(table, stage)
    context.log.info(
        f"{table}: {result.inserted} inserted, {result.updated} updated, "
        f"{result.deleted} deleted; {result.rows} rows, {result.errors} with an ERROR"
    )
    frame = warehouse.read_catalog(table)
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.rows),
            "inserted": dg.MetadataValue.int(result.inserted),
            "updated": dg.MetadataValue.int(result.updated),
            "deleted": dg.MetadataValue.int(result.deleted),
            "rows_with_error": dg.MetadataValue.int(result.errors),
            "images_per_class": dg.MetadataValue.md(class_counts_markdown(frame)),
            "dagster/column_schema": catalog_column_schema(table),
        }
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
) -> dg.MaterializeResult:
    """clothing_train(FILE_URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ERROR), one row per file."""
    return sync(context, warehouse, "clothing_train", train_stage.name)


@dg.asset(
    group_name="catalog",
    deps=[clothing_dataset],
    pool="clothing_warehouse",
    metadata={"dagster/column_schema": catalog_column_schema("clothing_test")},
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_test(
    context: dg.AssetExecutionContext, warehouse: Warehouse, test_stage: StageResource
) -> dg.MaterializeResult:
    """clothing_test(..., PRED_TIMESTAMP, TYPE, CONFIDENCE, MODEL_VERSION, ERROR); a changed
    file's prediction is cleared, unchanged rows keep theirs."""
    return sync(context, warehouse, "clothing_test", test_stage.name)
