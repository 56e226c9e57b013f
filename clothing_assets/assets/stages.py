"""The train and test stages: where the images live, registered and listed in the warehouse."""

import dagster as dg

from clothing_assets.assets.retries import TRANSIENT_FAILURES
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageLocationError, StageResource, redact_url


def refresh_stage(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage: StageResource
) -> dg.MaterializeResult:
    """Create the stage if missing, refresh its directory listing, report what it holds."""
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
    return dg.MaterializeResult(
        metadata={
            "location": dg.MetadataValue.text(shown),
            "file_count": dg.MetadataValue.int(summary.file_count),
            "bytes": dg.MetadataValue.int(summary.total_bytes),
            "warehouse": dg.MetadataValue.text(warehouse.describe()),
        }
    )


@dg.asset(
    group_name="stages",
    pool="clothing_warehouse",
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_dataset_train(
    context: dg.AssetExecutionContext, warehouse: Warehouse, train_stage: StageResource
) -> dg.MaterializeResult:
    """The train stage (`CLOTHING_TRAIN_STAGE_URL`): `<class>/<file>.jpg` training images."""
    return refresh_stage(context, warehouse, train_stage)


@dg.asset(
    group_name="stages",
    pool="clothing_warehouse",
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_dataset(
    context: dg.AssetExecutionContext, warehouse: Warehouse, test_stage: StageResource
) -> dg.MaterializeResult:
    """The test stage (`CLOTHING_TEST_STAGE_URL`): the images to classify."""
    return refresh_stage(context, warehouse, test_stage)
