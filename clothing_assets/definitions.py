"""The code location: assets, checks, jobs, automation and the environment's resources."""

import dagster as dg

from clothing_assets.asset_checks import ALL_CHECKS
from clothing_assets.assets import catalog, model, predictions, stages
from clothing_assets.automation import automation_conditions, build_automation_sensor
from clothing_assets.environment import asset_kinds, asset_metadata, resources_for
from clothing_assets.freshness import freshness_windows, with_freshness
from clothing_assets.jobs import JOBS
from clothing_assets.sensors import build_stage_observer
from clothing_assets.settings import setting


def all_assets() -> list[dg.AssetsDefinition]:
    """The seven assets, stages to predictions, with the kinds and metadata of the active
    deployment (its warehouse, its stages' stores and locations), the freshness policies
    of the configured windows and the automation conditions of the configured cron."""
    kinds, metadata = asset_kinds(), asset_metadata()
    windows = freshness_windows()
    conditions = automation_conditions(setting("CLOTHING_RETRAIN_CRON"))

    def for_this_deployment(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.merge_attributes(kinds=kinds.get(name, set()), metadata=metadata.get(name, {}))
        if name in conditions:
            spec = spec.replace_attributes(automation_condition=conditions[name])
        return with_freshness(spec, windows[name]) if name in windows else spec

    loaded = dg.load_assets_from_modules([stages, catalog, model, predictions])
    return list(dg.map_asset_specs(for_this_deployment, loaded))


def all_checks() -> list[dg.AssetChecksDefinition]:
    """The asset checks defined apart from their assets."""
    return list(ALL_CHECKS)


def all_sensors() -> list[dg.SensorDefinition]:
    """The stage observer and the automation sensor, both on CLOTHING_SENSOR_INTERVAL_SECONDS."""
    interval = setting("CLOTHING_SENSOR_INTERVAL_SECONDS")
    # rescoring at half the freshness window leaves a failed rescoring run one more try
    # before the policy fails
    rescore_after = freshness_windows()["clothing_predictions"] / 2
    return [
        build_stage_observer(interval, rescore_after=rescore_after),
        build_automation_sensor(interval),
    ]


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so the environment is read when the location loads."""
    return dg.Definitions(
        assets=all_assets(),
        asset_checks=all_checks(),
        jobs=JOBS,
        sensors=all_sensors(),
        resources=resources_for(),
        # Every step in the run's own process: a step process would import Dagster and the
        # code location again (seconds each, more than a no-change sync's work at 100,000
        # files); the steps are a chain, so there is little parallelism to lose.
        executor=dg.in_process_executor,
    )
