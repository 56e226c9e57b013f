"""The stage resource: where one stage's files live, and how to list and read them."""

from __future__ import annotations

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.stage.listing import list_stage, redact_url

# name -> configured URL of the stages this process's runs use: warehouses store a stage's URL
# without credentials and take the real one from here when they read (see `configured_url`)
_CONFIGURED: dict[str, str] = {}


def remember_url(name: str, url: str) -> None:
    """Note `url` as stage `name`'s configured location in this process."""
    _CONFIGURED[name] = url


def configured_url(name: str, stored: str) -> str:
    """The configured URL of stage `name` when `stored` is its redacted form, else `stored`."""
    url = _CONFIGURED.get(name)
    return url if url is not None and redact_url(url) == stored else stored


class StageResource(dg.ConfigurableResource):
    """One stage: its name in the warehouse and the location of its files."""

    name: str = Field(description="Stage name in the warehouse (e.g. clothing_dataset).")
    url: str = Field(description="A local folder or an fsspec URL (s3://..., gs://...).")
    env_var: str = Field(description="The variable users set to move this stage.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        remember_url(self.name, self.url)

    def list_files(self) -> pd.DataFrame:
        """The stage's listing (see `listing.list_stage`); never reads a file's bytes."""
        return list_stage(self.url, env_var=self.env_var)

    def shown_url(self) -> str:
        """The location without credentials, for logs and metadata."""
        return redact_url(self.url)
