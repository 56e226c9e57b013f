"""The active deployment's resources (environment.py: DuckDB or Snowflake, its stages, the
model registry, Dask) and the executor every job runs on."""

import dagster as dg

from clothing_assets.environment import resources_for


@dg.definitions
def resources() -> dg.Definitions:
    """Built when the location loads, so the environment is read then."""
    return dg.Definitions(
        resources=resources_for(),
        # Every step in the run's own process: a step process would import Dagster and the
        # code location again (seconds each, more than a no-change sync's work at 100,000
        # files); the steps are a chain, so there is little parallelism to lose.
        executor=dg.in_process_executor,
    )
