"""Jobs named for what users do, built from asset selections."""

import dagster as dg

# The stages are observable assets, which group and `all` selections leave out: named, so a job
# records the stage version its catalogs were synced at and the stage observer has nothing new
# to report after it
stages = dg.AssetSelection.assets("clothing_dataset_train", "clothing_dataset")
catalog_selection = stages | dg.AssetSelection.groups("catalog")

sync_catalogs_job = dg.define_asset_job(
    "sync_catalogs",
    selection=catalog_selection,
    description="Observe both stages and sync both catalogs.",
)
train_job = dg.define_asset_job(
    "train_model", selection=dg.AssetSelection.assets("trained_model", "champion_model"),
    description="Train a challenger from the current train catalog and decide on it.",
)  # fmt: skip
promote_job = dg.define_asset_job(
    "promote_model",
    selection=dg.AssetSelection.assets("champion_model", "clothing_predictions"),
    description="Promote the version in champion_model's config by hand (rollback or pinning) "
    "and rescore the rows another version scored.",
)
score_job = dg.define_asset_job(
    "score_test_images",
    selection=dg.AssetSelection.assets("clothing_dataset", "clothing_test", "clothing_predictions"),
    description="Sync the test catalog and score its unscored rows with the champion.",
)
review_job = dg.define_asset_job(
    "review_images",
    selection=dg.AssetSelection.assets("image_embeddings", "near_duplicates", "label_issues"),
    description="Embed what the champion has not, then find near-duplicates, train/test leakage "
    "and training labels the data disagrees with.",
)
everything_job = dg.define_asset_job(
    "everything",
    selection=stages | dg.AssetSelection.all(),
    description="The whole graph, in order.",
)

JOBS = [sync_catalogs_job, train_job, score_job, promote_job, review_job, everything_job]
