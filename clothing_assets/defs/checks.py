"""Asset checks: catalogs match their stages, unusable files are flagged, complete and sane
predictions, and a drift warning. (The promotion decision is a check that `champion_model`
reports itself: `challenger_promoted`.)"""

import dagster as dg
import pandas as pd

from clothing_assets.defs.assets.catalog import clothing_test, clothing_train
from clothing_assets.defs.assets.model import trained_model
from clothing_assets.defs.assets.predictions import clothing_predictions
from clothing_assets.resources.warehouse import CatalogTable, Warehouse
from clothing_assets.settings import setting
from clothing_assets.stage import StageResource, class_of

MAX_LISTED = 20


def _rows_match_stage(warehouse: Warehouse, table: CatalogTable, stage: str) -> dg.AssetCheckResult:
    rows = len(warehouse.read_catalog(table))
    files = warehouse.stage_file_count(stage)
    return dg.AssetCheckResult(
        passed=rows == files,
        metadata={"catalog_rows": rows, "stage_files": files},
        description=None if rows == files else f"{table} has {rows} rows, stage {stage} {files}",
    )


def _unusable_files(warehouse: Warehouse, table: CatalogTable) -> dg.AssetCheckResult:
    frame = warehouse.read_catalog(table)
    bad = frame[frame["ERROR"].notna()]
    listing = "\n".join(
        f"| {row.RELATIVE_PATH} | {row.ERROR} |" for row in bad.head(MAX_LISTED).itertuples()
    )
    return dg.AssetCheckResult(
        passed=bad.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "rows_with_error": len(bad),
            "files": dg.MetadataValue.md(f"| file | error |\n|---|---|\n{listing}")
            if len(bad)
            else dg.MetadataValue.md("none"),
        },
    )


@dg.asset_check(asset=clothing_train, description="One catalog row per stage file.")
def clothing_train_matches_stage(
    warehouse: Warehouse, train_stage: StageResource
) -> dg.AssetCheckResult:
    return _rows_match_stage(warehouse, "clothing_train", train_stage.name)


@dg.asset_check(asset=clothing_test, description="One catalog row per stage file.")
def clothing_test_matches_stage(
    warehouse: Warehouse, test_stage: StageResource
) -> dg.AssetCheckResult:
    return _rows_match_stage(warehouse, "clothing_test", test_stage.name)


# The unusable-file checks sit on the assets that open the files: only training and scoring
# find the undecodable ones, after the catalog sync has run.
@dg.asset_check(
    asset=trained_model, description="clothing_train files training could not use (ERROR set)."
)
def clothing_train_unusable_files(warehouse: Warehouse) -> dg.AssetCheckResult:
    return _unusable_files(warehouse, "clothing_train")


@dg.asset_check(
    asset=clothing_predictions, description="clothing_test files that could not be scored."
)
def clothing_test_unusable_files(warehouse: Warehouse) -> dg.AssetCheckResult:
    return _unusable_files(warehouse, "clothing_test")


def _current_scores(warehouse: Warehouse) -> tuple[str | None, pd.DataFrame]:
    champion = warehouse.champion()
    return (champion["VERSION"] if champion else None), warehouse.read_catalog("clothing_test")


@dg.asset_check(
    asset=clothing_predictions,
    description="Every readable clothing_test row is scored by the champion.",
)
def predictions_complete(warehouse: Warehouse) -> dg.AssetCheckResult:
    version, frame = _current_scores(warehouse)
    readable = frame[frame["ERROR"].isna()]
    unscored = readable[readable["TYPE"].isna() | (readable["MODEL_VERSION"] != version)]
    other_versions = sorted(set(frame["MODEL_VERSION"].dropna()) - {version})
    return dg.AssetCheckResult(
        passed=unscored.empty and not other_versions,
        metadata={
            "unscored_readable_rows": len(unscored),
            "champion": version or "none",
            "other_model_versions": dg.MetadataValue.json(other_versions),
            "examples": dg.MetadataValue.json(unscored["RELATIVE_PATH"].head(MAX_LISTED).tolist()),
        },
    )


@dg.asset_check(asset=clothing_predictions, description="CONFIDENCE lies in [0, 1].")
def confidence_in_range(warehouse: Warehouse) -> dg.AssetCheckResult:
    frame = warehouse.read_catalog("clothing_test")
    scored = frame["CONFIDENCE"].dropna()
    bad = scored[(scored < 0) | (scored > 1)]
    return dg.AssetCheckResult(
        passed=bad.empty,
        metadata={
            "out_of_range": len(bad),
            "min": float(scored.min()) if len(scored) else float("nan"),
            "max": float(scored.max()) if len(scored) else float("nan"),
        },
    )


def class_mix(labels: pd.Series) -> pd.Series:
    """Share of each class among `labels`."""
    return labels.value_counts(normalize=True).sort_index()


def total_variation(p: pd.Series, q: pd.Series) -> float:
    """Half the L1 distance between two class mixes (0: same, 1: disjoint)."""
    union = p.index.union(q.index)
    return float(
        0.5 * (p.reindex(union, fill_value=0) - q.reindex(union, fill_value=0)).abs().sum()
    )


@dg.asset_check(
    asset=clothing_predictions,
    description="Warns when the predicted class mix departs from the training class mix "
    "(total variation distance above CLOTHING_DRIFT_THRESHOLD, default 0.25).",
)
def predicted_class_mix_drift(warehouse: Warehouse) -> dg.AssetCheckResult:
    version, test = _current_scores(warehouse)
    threshold = setting("CLOTHING_DRIFT_THRESHOLD")
    train = warehouse.read_catalog("clothing_train")
    trained = class_mix(train[train["ERROR"].isna()]["RELATIVE_PATH"].map(class_of).dropna())
    predicted = class_mix(test[(test["MODEL_VERSION"] == version)]["TYPE"].dropna())
    distance = total_variation(trained, predicted) if len(predicted) else 0.0
    table = pd.DataFrame({"train": trained, "predicted": predicted}).fillna(0.0).round(3)
    rows = "\n".join(f"| {c} | {r.train:.3f} | {r.predicted:.3f} |" for c, r in table.iterrows())
    return dg.AssetCheckResult(
        passed=distance <= threshold,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "total_variation": dg.MetadataValue.float(round(distance, 4)),
            "threshold": dg.MetadataValue.float(threshold),
            "class_mix": dg.MetadataValue.md(
                f"| class | train | predicted |\n|---|---:|---:|\n{rows}"
            ),
        },
    )
