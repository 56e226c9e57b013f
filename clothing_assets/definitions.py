"""The code location: the defs folder (clothing_assets/defs: the asset groups, checks, jobs,
automation and resources), loaded as `dg` loads it, each asset given the kinds and metadata of
the active deployment, its freshness policy and its automation condition."""

import importlib
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from dagster._record import copy
from dagster.components.core.component_tree import ComponentTreeException

from clothing_assets.defs.automation import automation_conditions
from clothing_assets.environment import asset_kinds, asset_metadata
from clothing_assets.freshness import freshness_windows, with_freshness
from clothing_assets.settings import ConfigurationError, setting

PACKAGE = Path(__file__).parent


def for_this_deployment() -> Callable[[dg.AssetSpec], dg.AssetSpec]:
    """A spec mapping that adds the active deployment's kinds and metadata (its warehouse, its
    stages' stores and locations), the freshness policies of the configured windows and the
    automation conditions of the configured cron."""
    kinds, metadata = asset_kinds(), asset_metadata()
    windows = freshness_windows()
    conditions = automation_conditions(setting("CLOTHING_RETRAIN_CRON"))

    def mapped(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        spec = spec.merge_attributes(kinds=kinds.get(name, set()), metadata=metadata.get(name, {}))
        if name in conditions:
            spec = spec.replace_attributes(automation_condition=conditions[name])
        return with_freshness(spec, windows[name]) if name in windows else spec

    return mapped


def defs_folder() -> dg.Definitions:
    """Everything in clothing_assets/defs. In a checkout, `dg.load_from_defs_folder` finds the
    project through pyproject.toml's [tool.dg]; an installed wheel carries no pyproject.toml,
    so there the same folder is loaded as a component tree rooted at the package. A setting the
    project cannot use is raised as itself (its message names the variable), not inside the
    tree's report of which module failed."""
    try:
        if (PACKAGE.parent / "pyproject.toml").is_file():
            return dg.load_from_defs_folder(path_within_project=PACKAGE)
        tree = dg.ComponentTree.from_module(
            defs_module=importlib.import_module("clothing_assets.defs"),
            project_root=PACKAGE.parent,
        )
        return tree.build_defs()
    except ComponentTreeException as exc:
        if isinstance(exc.__cause__, ConfigurationError):
            raise exc.__cause__ from None
        raise


def location() -> dg.Definitions:
    """The defs folder with each asset's attributes for this deployment."""
    loaded = defs_folder()
    # A module that imports an asset (a dependency, an asset check's target) holds it too, so
    # the folder lists it once per module. Dagster accepts the same object twice, but mapped
    # copies would be two assets with one key: map each asset once.
    unique = list({id(asset): asset for asset in loaded.assets or []}.values())
    return copy(loaded, assets=list(dg.map_asset_specs(for_this_deployment(), unique)))


def all_assets() -> list[dg.AssetsDefinition]:
    """Every asset, stages to predictions and the embeddings, as the location defines them."""
    return list(location().assets or [])


def all_checks() -> list[dg.AssetChecksDefinition]:
    """The asset checks defined apart from their assets."""
    return list(location().asset_checks or [])


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded lazily by Dagster, so the environment is read when the location loads."""
    return location()
