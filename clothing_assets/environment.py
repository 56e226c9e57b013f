"""Choose the deployment once (local by default) and build its resource set."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_duckdb import DuckDBResource

from clothing_assets import settings
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.stage import StageResource

DEFAULT_DUCKDB_PATH = "data/clothing.duckdb"
DEFAULT_TRAIN_STAGE_URL = "data/clothing-dataset-small/train"
DEFAULT_TEST_STAGE_URL = "data/clothing-dataset-small/test"
DEFAULT_MODELS_DIR = "models"

TRAIN_STAGE = "clothing_dataset_train"
TEST_STAGE = "clothing_dataset"


def get_environment() -> str:
    """`CLOTHING_WAREHOUSE` (local or snowflake) picks the deployment. Unset, a set
    `SNOWFLAKE_ACCOUNT` picks snowflake; otherwise local."""
    chosen = os.environ.get("CLOTHING_WAREHOUSE", "").strip().lower()
    if chosen:
        return chosen
    return "snowflake" if os.environ.get("SNOWFLAKE_ACCOUNT", "").strip() else "local"


def env_or_default(name: str, default: str) -> str | dg.EnvVar:
    """A `dg.EnvVar` when the variable is set (resolved by Dagster at run time), else `default`."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def _env_count(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name}={raw!r} is not a whole number >= 0")
    return int(raw)


def sensor_interval_seconds() -> int:
    """Minimum seconds between two ticks of a stage sensor (CLOTHING_SENSOR_INTERVAL_SECONDS)."""
    raw = os.environ.get("CLOTHING_SENSOR_INTERVAL_SECONDS", "60")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"CLOTHING_SENSOR_INTERVAL_SECONDS={raw!r} is not a positive integer")
    return int(raw)


def retrain_cron(default: str) -> str:
    """The retraining schedule's cron (CLOTHING_RETRAIN_CRON), UTC."""
    return os.environ.get("CLOTHING_RETRAIN_CRON", "").strip() or default


def _stages() -> dict[str, Any]:
    return {
        "train_stage": StageResource(
            name=TRAIN_STAGE,
            url=env_or_default("CLOTHING_TRAIN_STAGE_URL", DEFAULT_TRAIN_STAGE_URL),
            env_var="CLOTHING_TRAIN_STAGE_URL",
        ),
        "test_stage": StageResource(
            name=TEST_STAGE,
            url=env_or_default("CLOTHING_TEST_STAGE_URL", DEFAULT_TEST_STAGE_URL),
            env_var="CLOTHING_TEST_STAGE_URL",
        ),
    }


def _dask() -> DaskClusterResource:
    workers = _env_count("CLOTHING_DASK_WORKERS", 0) or min(4, os.cpu_count() or 1)
    return DaskClusterResource(
        scheduler_address=settings.env_or_default("DASK_SCHEDULER_ADDRESS"),
        n_workers=workers,
        threads_per_worker=1,
        worker_gpus=_env_count("CLOTHING_DASK_WORKER_GPUS", 0),
        no_workers_timeout_s=settings.setting("CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS"),
    )


def _common() -> dict[str, Any]:
    return {
        **_stages(),
        "model_store": ModelStoreResource(
            directory=env_or_default("CLOTHING_MODELS_DIR", DEFAULT_MODELS_DIR),
            min_val_accuracy=_env_float("CLOTHING_MIN_VAL_ACCURACY", 0.5),
            drift_threshold=_env_float("CLOTHING_DRIFT_THRESHOLD", 0.25),
        ),
        "dask": _dask(),
    }


def local_resources() -> dict[str, Any]:
    """The embedded default: DuckDB file, local (or fsspec) stages, a local Dask cluster."""
    return {
        "warehouse": DuckDBWarehouse(
            duckdb=DuckDBResource(
                database=env_or_default("CLOTHING_DUCKDB_PATH", DEFAULT_DUCKDB_PATH)
            )
        ),
        **_common(),
    }


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{name}={raw!r} is not a positive integer")
    return int(raw)


def snowflake_connection() -> Any:
    """SnowflakeResource with every account field from `dg.EnvVar` (resolved at run time):
    key-pair auth when SNOWFLAKE_PRIVATE_KEY_PATH is set, else SNOWFLAKE_PASSWORD. Login and
    network timeouts are explicit (SNOWFLAKE_LOGIN_TIMEOUT, SNOWFLAKE_NETWORK_TIMEOUT)."""
    from dagster_snowflake import SnowflakeResource  # only Snowflake deployments pay its import

    if os.environ.get("SNOWFLAKE_PRIVATE_KEY_PATH"):
        auth: dict[str, Any] = {"private_key_path": dg.EnvVar("SNOWFLAKE_PRIVATE_KEY_PATH")}
        if os.environ.get("SNOWFLAKE_PRIVATE_KEY_PASSWORD"):
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
        login_timeout=_env_int("SNOWFLAKE_LOGIN_TIMEOUT", 60),
        network_timeout=_env_int("SNOWFLAKE_NETWORK_TIMEOUT", 300),
        **auth,
    )


def snowflake_resources() -> dict[str, Any]:
    """Snowflake: the catalogs in SNOWFLAKE_DATABASE.SNOWFLAKE_SCHEMA, each stage an external
    stage over CLOTHING_*_STAGE_URL (s3://...) through CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION."""
    from clothing_assets.resources.snowflake_warehouse import SnowflakeWarehouse

    return {
        "warehouse": SnowflakeWarehouse(
            snowflake=snowflake_connection(),
            storage_integration=dg.EnvVar("CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION"),
            presign_expiry_seconds=_env_int("CLOTHING_PRESIGN_EXPIRY_SECONDS", 900),
        ),
        **_common(),
    }


RESOURCES_BY_ENVIRONMENT: dict[str, Callable[[], dict[str, Any]]] = {
    "local": local_resources,
    "snowflake": snowflake_resources,
}


def resources_for(environment: str | None = None) -> dict[str, Any]:
    """The resource set of `environment` (default: `get_environment()`)."""
    environment = environment or get_environment()
    if environment not in RESOURCES_BY_ENVIRONMENT:
        raise ValueError(
            f"CLOTHING_WAREHOUSE={environment!r} is not one of "
            f"{', '.join(sorted(RESOURCES_BY_ENVIRONMENT))}"
        )
    return RESOURCES_BY_ENVIRONMENT[environment]()
