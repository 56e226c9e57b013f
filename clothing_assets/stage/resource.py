"""The stage resource: where one stage's files live, and how to list and read them."""

from __future__ import annotations

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.stage.listing import list_stage, redact_url


class StageResource(dg.ConfigurableResource):
    """One stage: its name in the warehouse and the location of its files."""

    name: str = Field(description="Stage name in the warehouse (e.g. clothing_dataset).")
    url: str = Field(description="A local folder or an fsspec URL (s3://..., gs://...).")
    env_var: str = Field(description="The variable users set to move this stage.")

    def list_files(self) -> pd.DataFrame:
        """The stage's listing (see `listing.list_stage`); never reads a file's bytes."""
        return list_stage(self.url, env_var=self.env_var)

    def shown_url(self) -> str:
        """The location without credentials, for logs and metadata."""
        return redact_url(self.url)
