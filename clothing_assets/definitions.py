"""The code location: assets, checks, jobs, sensors, schedules and the environment's resources."""

import dagster as dg

from clothing_assets.asset_checks import ALL_CHECKS
from clothing_assets.assets import catalog, embeddings, model, predictions, review, stages
from clothing_assets.environment import asset_kinds, asset_metadata, resources_for
from clothing_assets.freshness import freshness_windows, with_freshness
from clothing_assets.jobs import JOBS
from clothing_assets.schedules import build_retrain_schedule
from clothing_assets.sensors import build_sensors
from clothing_assets.settings import setting


def all_assets() -> list[dg.AssetsDefinition]:
    """The assets, stages to predictions, embeddings and the review of duplicates and labels,
    with the kinds and metadata of the active deployment (its warehouse, its stages' stores and
    locations) and the freshness policies of the configured windows."""
    kinds, metadata = asset_kinds(), asset_metadata()
    windows = freshness_windows()

    def for_this_deployment(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.merge_attributes(kinds=kinds.get(name, set()), metadata=metadata.get(name, {}))
        return with_freshness(spec, windows[name]) if name in windows else spec

    loaded = dg.load_assets_from_modules([stages, catalog, model, predictions, embeddings, review])
    return list(dg.map_asset_specs(for_this_deployment, loaded))


def all_checks() -> list[dg.AssetChecksDefinition]:
    """The asset checks defined apart from their assets."""
    return list(ALL_CHECKS)


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so the environment is read when the location loads."""
    return dg.Definitions(
        assets=all_assets(),
        asset_checks=all_checks(),
        jobs=JOBS,
        # rescoring at half the freshness window leaves a failed rescoring run one more try
        # before the policy fails
        sensors=build_sensors(
            setting("CLOTHING_SENSOR_INTERVAL_SECONDS"),
            rescore_after=freshness_windows()["clothing_predictions"] / 2,
        ),
        schedules=[build_retrain_schedule(setting("CLOTHING_RETRAIN_CRON"))],
        resources=resources_for(),
        # Every step in the run's own process: a step process would import Dagster and the
        # code location again (seconds each, more than a no-change sync's work at 100,000
        # files); the steps are a chain, so there is little parallelism to lose.
        executor=dg.in_process_executor,
    )
