"""Choose the deployment once (local by default) and build its resource set. Every variable
and its default comes from `settings`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_registry import ModelRegistry
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.settings import (
    ConfigurationError,
    SettingsError,
    env_or_default,
    is_set,
    setting,
)
from clothing_assets.stage import StageResource, redact_url

TRAIN_STAGE = "clothing_dataset_train"
TEST_STAGE = "clothing_dataset"
SNOWFLAKE_INSTALL = "pip install 'clothing_assets[snowflake]'"


class MissingExtraError(ConfigurationError, ImportError):
    """A deployment was chosen whose packages (an optional extra) are not installed."""


def require_snowflake_packages() -> None:
    """Snowflake mode's packages come with the `snowflake` extra, which a DuckDB install
    leaves out: without them, fail with one line that says how to install them."""
    try:
        import dagster_snowflake  # noqa: F401
        import snowflake.connector  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"the Snowflake warehouse needs the package {exc.name or 'snowflake'}, which is not "
            f"installed: {SNOWFLAKE_INSTALL} (or set CLOTHING_WAREHOUSE=local for DuckDB)"
        ) from None


def get_environment() -> str:
    """`CLOTHING_WAREHOUSE` (local or snowflake) picks the deployment. Unset, a set
    `SNOWFLAKE_ACCOUNT` picks snowflake; otherwise local."""
    chosen = setting("CLOTHING_WAREHOUSE")
    if chosen:
        return chosen
    return "snowflake" if is_set("SNOWFLAKE_ACCOUNT") else "local"


def _stages() -> dict[str, Any]:
    return {
        "train_stage": StageResource(
            name=TRAIN_STAGE,
            url=env_or_default("CLOTHING_TRAIN_STAGE_URL"),
            env_var="CLOTHING_TRAIN_STAGE_URL",
        ),
        "test_stage": StageResource(
            name=TEST_STAGE,
            url=env_or_default("CLOTHING_TEST_STAGE_URL"),
            env_var="CLOTHING_TEST_STAGE_URL",
        ),
    }


def _dask() -> DaskClusterResource:
    return DaskClusterResource(
        scheduler_address=env_or_default("DASK_SCHEDULER_ADDRESS"),
        n_workers=setting("CLOTHING_DASK_WORKERS"),
        threads_per_worker=1,
        worker_gpus=setting("CLOTHING_DASK_WORKER_GPUS"),
        no_workers_timeout_s=setting("CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS"),
    )


def _store() -> ModelStoreResource:
    return ModelStoreResource(
        directory=env_or_default("CLOTHING_MODELS_DIR"),
        cache_directory=env_or_default("CLOTHING_CACHE_DIR"),
    )


def registry_with(warehouse: Warehouse, store: ModelStoreResource) -> ModelRegistry:
    """The model registry over `warehouse` and the model store."""
    return ModelRegistry(
        warehouse=warehouse,
        store=store,
        min_val_accuracy=setting("CLOTHING_MIN_VAL_ACCURACY"),
        promotion_margin=setting("CLOTHING_PROMOTION_MARGIN"),
        keep_models=setting("CLOTHING_KEEP_MODELS"),
    )


def resources_with(warehouse: Warehouse) -> dict[str, Any]:
    """The resources every deployment shares, around its warehouse."""
    store = _store()
    return {
        "warehouse": warehouse,
        **_stages(),
        "model_store": store,
        "model_registry": registry_with(warehouse, store),
        "dask": _dask(),
    }


def local_warehouse(*, read_only: bool = False) -> DuckDBWarehouse:
    """The DuckDB file of CLOTHING_DUCKDB_PATH."""
    database = env_or_default("CLOTHING_DUCKDB_PATH")
    return DuckDBWarehouse(duckdb=DuckDBResource(database=database), read_only=read_only)


def local_resources() -> dict[str, Any]:
    """The embedded default: DuckDB file, local (or fsspec) stages, a local Dask cluster."""
    return resources_with(local_warehouse())


def snowflake_connection() -> Any:
    """SnowflakeResource with every account field from `dg.EnvVar` (resolved at run time):
    key-pair auth when SNOWFLAKE_PRIVATE_KEY_PATH is set, else SNOWFLAKE_PASSWORD. Login and
    network timeouts are explicit (SNOWFLAKE_LOGIN_TIMEOUT, SNOWFLAKE_NETWORK_TIMEOUT)."""
    require_snowflake_packages()
    from dagster_snowflake import SnowflakeResource  # only Snowflake deployments pay its import

    if is_set("SNOWFLAKE_PRIVATE_KEY_PATH"):
        auth: dict[str, Any] = {"private_key_path": dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PATH")}
        if is_set("SNOWFLAKE_PRIVATE_KEY_PASSWORD"):
            auth["private_key_password"] = dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PASSWORD")
    else:
        auth = {"password": dg.EnvVar("SNOWFLAKE_PASSWORD")}
    return SnowflakeResource(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar("SNOWFLAKE_USER"),
        warehouse=dg.EnvVar("SNOWFLAKE_WAREHOUSE"),
        database=dg.EnvVar("SNOWFLAKE_DATABASE"),
        schema=dg.EnvVar("SNOWFLAKE_SCHEMA"),
        role=dg.EnvVar("SNOWFLAKE_ROLE"),
        login_timeout=setting("SNOWFLAKE_LOGIN_TIMEOUT"),
        network_timeout=setting("SNOWFLAKE_NETWORK_TIMEOUT"),
        **auth,
    )


def snowflake_warehouse(*, read_only: bool = False) -> Warehouse:
    """The catalogs in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA, each stage an external stage over
    CLOTHING_*_STAGE_URL (s3://...) through CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION."""
    require_snowflake_packages()
    from clothing_assets.resources.snowflake_warehouse import SnowflakeWarehouse

    return SnowflakeWarehouse(
        snowflake=snowflake_connection(),
        storage_integration=dg.EnvVar("CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION"),
        presign_expiry_seconds=setting("CLOTHING_PRESIGN_EXPIRY_SECONDS"),
        read_only=read_only,
    )


def snowflake_resources() -> dict[str, Any]:
    """Snowflake: the warehouse of `snowflake_warehouse` and the shared resources."""
    return resources_with(snowflake_warehouse())


RESOURCES_BY_ENVIRONMENT: dict[str, Callable[[], dict[str, Any]]] = {
    "local": local_resources,
    "snowflake": snowflake_resources,
}
WAREHOUSES_BY_ENVIRONMENT: dict[str, Callable[..., Warehouse]] = {
    "local": local_warehouse,
    "snowflake": snowflake_warehouse,
}


def _known_environment(environment: str | None) -> str:
    environment = environment or get_environment()
    if environment not in RESOURCES_BY_ENVIRONMENT:
        raise SettingsError(
            f"CLOTHING_WAREHOUSE={environment!r} is not one of "
            f"{', '.join(sorted(RESOURCES_BY_ENVIRONMENT))}: set it to one of them"
        )
    return environment


def resources_for(environment: str | None = None) -> dict[str, Any]:
    """The resource set of `environment` (default: `get_environment()`)."""
    return RESOURCES_BY_ENVIRONMENT[_known_environment(environment)]()


def missing_snowflake_variables() -> list[str]:
    """The variables a Snowflake connection needs that are not set: the account fields, the
    password (unless key-pair auth is set up) and the stages' storage integration."""
    keyed = is_set("SNOWFLAKE_PRIVATE_KEY_PATH")
    auth = "SNOWFLAKE_PRIVATE_KEY_PATH" if keyed else "SNOWFLAKE_PASSWORD"
    needed = ["SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", auth, "SNOWFLAKE_ROLE",
              "SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA",
              "CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION"]  # fmt: skip
    return [name for name in needed if not is_set(name)]


def check_environment(environment: str | None = None) -> str:
    """The deployment (default: `get_environment()`), checked before anything connects:
    raises ConfigurationError naming every variable it lacks."""
    environment = _known_environment(environment)
    missing = missing_snowflake_variables() if environment == "snowflake" else []
    if missing:
        explicit = is_set("CLOTHING_WAREHOUSE")
        chosen = "CLOTHING_WAREHOUSE=snowflake" if explicit else "SNOWFLAKE_ACCOUNT is set"
        key_pair = (
            " (or SNOWFLAKE_PRIVATE_KEY_PATH instead of SNOWFLAKE_PASSWORD)"
            if "SNOWFLAKE_PASSWORD" in missing
            else ""
        )
        raise ConfigurationError(
            f"the Snowflake warehouse ({chosen}) needs {', '.join(missing)}: set them"
            f"{key_pair}, or set CLOTHING_WAREHOUSE=local for the DuckDB warehouse"
        )
    return environment


def warehouse_for(environment: str | None = None, *, read_only: bool = False) -> Warehouse:
    """The checked warehouse of `environment`; `read_only`: it creates and changes nothing,
    and one that does not exist yet is a ConfigurationError."""
    return WAREHOUSES_BY_ENVIRONMENT[check_environment(environment)](read_only=read_only)


# the kind (the UI's technology tag) of the warehouse each deployment writes to
WAREHOUSE_KIND = {"local": "duckdb", "snowflake": "snowflake"}

# the kind of a stage by its URL's scheme (no scheme: a local folder); fsspec and Snowflake
# spell some stores two ways. Any other scheme is its own kind.
STAGE_KIND_BY_SCHEME = {
    "": "file", "file": "file", "local": "file",
    "s3": "s3", "s3a": "s3",
    "gs": "gcs", "gcs": "gcs",
    "az": "azure", "abfs": "azure", "abfss": "azure", "azure": "azure",
}  # fmt: skip


def stage_kind(url: str) -> str:
    """The kind of the store a stage URL points into: `file`, `s3`, `gcs`, `azure`, ..."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    return STAGE_KIND_BY_SCHEME.get(scheme, scheme)


def asset_kinds(environment: str | None = None) -> dict[str, set[str]]:
    """The kinds the deployment gives each asset beyond its own: the store of each stage,
    and the warehouse of every asset that writes into it (catalogs, registry, predictions)."""
    warehouse = WAREHOUSE_KIND[_known_environment(environment)]
    return {
        TRAIN_STAGE: {stage_kind(setting("CLOTHING_TRAIN_STAGE_URL"))},
        TEST_STAGE: {stage_kind(setting("CLOTHING_TEST_STAGE_URL"))},
        "clothing_train": {warehouse},
        "clothing_test": {warehouse},
        "champion_model": {warehouse},
        "clothing_predictions": {warehouse},
        "image_embeddings": {warehouse},
        "near_duplicates": {warehouse},
        "label_issues": {warehouse},
    }


@contextmanager
def open_warehouse(*, read_only: bool = False) -> Iterator[Warehouse]:
    """The warehouse of this environment outside a Dagster run (the CLI), its environment
    variables resolved as Dagster would resolve them."""
    with dg.build_resources({"warehouse": warehouse_for(read_only=read_only)}) as built:
        yield built.warehouse


@contextmanager
def open_registry(*, read_only: bool = False) -> Iterator[ModelRegistry]:
    """The model registry of this environment, outside a Dagster run (the CLI):
    its environment variables resolved as Dagster would resolve them."""
    registry = registry_with(warehouse_for(read_only=read_only), _store())
    with dg.build_resources({"model_registry": registry}) as built:
        yield built.model_registry


def registry_parts(*, read_only: bool = False) -> tuple[Warehouse, ModelStoreResource]:
    """This environment's warehouse and model store, built once for a long-lived reader
    outside a Dagster run (the model server), their environment variables resolved as Dagster
    would resolve them. Neither keeps a connection or needs a teardown: each call opens and
    closes its own, so they stay usable after the build."""
    parts = {"warehouse": warehouse_for(read_only=read_only), "model_store": _store()}
    with dg.build_resources(parts) as built:
        return built.warehouse, built.model_store


def _qualified_table(environment: str, table: str) -> str | None:
    """`table` as the warehouse names it in full, or None when that is not known at load."""
    if environment == "local":
        # DuckDB names a database file's catalog after the file's stem; tables are in `main`
        return f"{PurePath(setting('CLOTHING_DUCKDB_PATH')).stem}.main.{table}"
    if is_set("SNOWFLAKE_DATABASE") and is_set("SNOWFLAKE_SCHEMA"):
        # the project's statements name tables unquoted, which Snowflake stores upper-cased
        database, schema = setting("SNOWFLAKE_DATABASE"), setting("SNOWFLAKE_SCHEMA")
        return f"{database}.{schema}.{table.upper()}"
    return None


def asset_metadata(environment: str | None = None) -> dict[str, dict[str, Any]]:
    """Definition metadata of the deployment: each stage's location (credentials removed) and
    each catalog's table as the warehouse names it (`dagster/table_name`)."""
    environment = _known_environment(environment)
    metadata: dict[str, dict[str, Any]] = {
        TRAIN_STAGE: {"location": redact_url(setting("CLOTHING_TRAIN_STAGE_URL"))},
        TEST_STAGE: {"location": redact_url(setting("CLOTHING_TEST_STAGE_URL"))},
    }
    for table in ("clothing_train", "clothing_test"):
        name = _qualified_table(environment, table)
        metadata[table] = {"dagster/table_name": name} if name else {}
    return metadata
