"""The train and test stages: where the images live, as observable assets. An observation is a
cheap look at the stage (names, sizes, timestamps, ETags; never image bytes) whose digest is
the stage's data version, so automation sees a new version exactly when a file was added,
removed or changed. The look is the warehouse's (`Warehouse.stage_state`): DuckDB mode lists
the stage's location with fsspec; Snowflake mode refreshes the stage's directory table and
reads a summary of it, never the bucket.

Registering the stage in the warehouse and refreshing its directory listing belong to the
catalog sync (assets/catalog.py), the step that reads that listing."""

import dagster as dg

from clothing_assets.resources.warehouse import StageState, Warehouse
from clothing_assets.stage import StageLocationError, StageResource, redact_url


def observe_stage(warehouse: Warehouse, stage: StageResource) -> tuple[StageState, dict]:
    """The stage's state as the warehouse sees it and the observation's metadata. Raises
    StageLocationError when the location cannot be listed."""
    state = warehouse.stage_state(stage)
    metadata: dict = {
        "file_count": dg.MetadataValue.int(state.files),
        "location": dg.MetadataValue.text(redact_url(stage.url)),
        "warehouse": dg.MetadataValue.text(warehouse.describe()),
    }
    if state.listing is not None:
        metadata["bytes"] = dg.MetadataValue.int(int(state.listing["SIZE"].fillna(0).sum()))
    if not state.exists:
        metadata["note"] = dg.MetadataValue.text("not created in the warehouse yet: its sync will")
    return state, metadata


def observation(
    context: dg.AssetExecutionContext, warehouse: Warehouse, stage: StageResource
) -> dg.ObserveResult:
    """One observation of `stage` in a run: its data version (the listing's digest) and what
    it holds."""
    try:
        state, metadata = observe_stage(warehouse, stage)
    except StageLocationError as exc:
        # a location that does not exist is configuration: retrying cannot make it appear
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    shown = redact_url(stage.url)
    context.log.info(f"stage {stage.name}: {state.files} files at {shown}")
    if state.files == 0:
        context.log.warning(f"stage {stage.name} at {shown} holds no files")
    return dg.ObserveResult(data_version=dg.DataVersion(state.key), metadata=metadata)


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            "clothing_dataset_train",
            group_name="stages",
            description="The train stage (`CLOTHING_TRAIN_STAGE_URL`): `<class>/<file>.jpg` "
            "training images.",
        )
    ],
    name="clothing_dataset_train",
)
def clothing_dataset_train(
    context: dg.AssetExecutionContext, warehouse: Warehouse, train_stage: StageResource
) -> dg.ObserveResult:
    """Observe the train stage."""
    return observation(context, warehouse, train_stage)


@dg.multi_observable_source_asset(
    specs=[
        dg.AssetSpec(
            "clothing_dataset",
            group_name="stages",
            description="The test stage (`CLOTHING_TEST_STAGE_URL`): the images to classify.",
        )
    ],
    name="clothing_dataset",
)
def clothing_dataset(
    context: dg.AssetExecutionContext, warehouse: Warehouse, test_stage: StageResource
) -> dg.ObserveResult:
    """Observe the test stage."""
    return observation(context, warehouse, test_stage)
