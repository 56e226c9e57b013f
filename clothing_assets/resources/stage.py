"""Where a stage's files live: a local folder or an fsspec URL."""

import dagster as dg
from pydantic import Field


class StageResource(dg.ConfigurableResource):
    """One stage: its name in the warehouse and the location of its files."""

    name: str = Field(description="Stage name in the warehouse (e.g. clothing_dataset).")
    url: str = Field(description="A local folder or an fsspec URL (s3://..., gs://...).")
    env_var: str = Field(description="The variable users set to move this stage.")
