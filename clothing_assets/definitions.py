"""The code location: assets, jobs and the resource set of the chosen environment."""

import dagster as dg

from clothing_assets.assets import catalog, model, predictions, stages
from clothing_assets.environment import resources_for
from clothing_assets.jobs import JOBS


def all_assets() -> list[dg.AssetsDefinition]:
    """The six assets, stages to predictions."""
    return list(dg.load_assets_from_modules([stages, catalog, model, predictions]))


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so the environment is read when the location loads."""
    return dg.Definitions(assets=all_assets(), jobs=JOBS, resources=resources_for())
