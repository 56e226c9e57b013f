"""Jobs named for what users do, built from asset selections."""

import dagster as dg

catalog_selection = dg.AssetSelection.groups("stages", "catalog")

sync_catalogs_job = dg.define_asset_job(
    "sync_catalogs", selection=catalog_selection, description="Refresh both stages and catalogs."
)
train_job = dg.define_asset_job(
    "train_model", selection=dg.AssetSelection.assets("trained_model"),
    description="Retrain the model from the current train catalog.",
)  # fmt: skip
score_job = dg.define_asset_job(
    "score_test_images",
    selection=dg.AssetSelection.assets("clothing_dataset", "clothing_test", "clothing_predictions"),
    description="Sync the test catalog and score its unscored rows with the current model.",
)
everything_job = dg.define_asset_job(
    "everything", selection=dg.AssetSelection.all(), description="The whole graph, in order."
)

JOBS = [sync_catalogs_job, train_job, score_job, everything_job]
