"""The code location: assets, checks, jobs, sensors, schedules and the environment's resources."""

import dagster as dg

from clothing_assets.asset_checks import ALL_CHECKS
from clothing_assets.assets import catalog, model, predictions, stages
from clothing_assets.environment import resources_for
from clothing_assets.jobs import JOBS
from clothing_assets.schedules import build_retrain_schedule
from clothing_assets.sensors import build_sensors
from clothing_assets.settings import setting


def all_assets() -> list[dg.AssetsDefinition]:
    """The seven assets, stages to predictions."""
    return list(dg.load_assets_from_modules([stages, catalog, model, predictions]))


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
        sensors=build_sensors(setting("CLOTHING_SENSOR_INTERVAL_SECONDS")),
        schedules=[build_retrain_schedule(setting("CLOTHING_RETRAIN_CRON"))],
        resources=resources_for(),
        # Every step in the run's own process: a step process would import Dagster and the
        # code location again (seconds each, more than a no-change sync's work at 100,000
        # files); the steps are a chain, so there is little parallelism to lose.
        executor=dg.in_process_executor,
    )
