"""Every environment variable the project reads, with its default, stated once.

`setting(name)` parses a variable (or returns its default) and fails with a message that names
the variable; `env_or_default(name)` hands Dagster a `dg.EnvVar` when the variable is set, so a
resource resolves it at run time rather than when the code location loads. Nothing else in
the package reads `os.environ` for configuration.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg


class ConfigurationError(Exception):
    """Configuration the project cannot use (a variable, a command-line value, a warehouse
    that is not there); the message says what is wrong and what to set. Raised where the
    problem is found; the command line prints it as one `error:` line."""


class SettingsError(ConfigurationError, ValueError):
    """An environment variable holds a value the project cannot use; the message names it."""


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError("is not a positive integer")
    return int(raw)


def _count(raw: str) -> int:
    if not raw.isdigit():
        raise ValueError("is not a whole number >= 0")
    return int(raw)


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError("is not a number") from None


def _positive_number(raw: str) -> float:
    value = _number(raw)
    if not value > 0:
        raise ValueError("is not a number > 0")
    return value


def _text(raw: str) -> str:
    return raw.strip()


WAREHOUSES = ("local", "snowflake")


def _warehouse(raw: str) -> str:
    value = raw.strip().lower()
    if value not in WAREHOUSES:
        raise ValueError(f"is not one of {', '.join(WAREHOUSES)}: set it to one of them")
    return value


def _scoring_runtime(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "torch", "onnxruntime-int8"):  # ml.runtime.RUNTIMES (torch-free here)
        raise ValueError("is not one of auto, torch, onnxruntime-int8")
    return value


def _default_workers() -> int:
    return min(4, os.cpu_count() or 1)


@dataclass(frozen=True)
class Variable:
    """One environment variable: its default (None: unset means absent) and its meaning."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    secret: bool = False

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


_VARIABLES = [
    Variable("CLOTHING_WAREHOUSE", None, _warehouse,
             "`local` (DuckDB) or `snowflake`; unset: `snowflake` when SNOWFLAKE_ACCOUNT is set"),
    Variable("CLOTHING_TRAIN_STAGE_URL", "data/clothing-dataset-small/train", _text,
             "train stage: a folder or fsspec URL of `<class>/<file>.jpg`"),
    Variable("CLOTHING_TEST_STAGE_URL", "data/clothing-dataset-small/test", _text,
             "test stage: a folder or fsspec URL"),
    Variable("CLOTHING_DUCKDB_PATH", "data/clothing.duckdb", _text, "the DuckDB warehouse file"),
    Variable("CLOTHING_MODELS_DIR", "models", _text,
             "the model store: a folder or fsspec URL (`s3://...` with the `s3` extra) holding "
             "every model version"),
    Variable("CLOTHING_CACHE_DIR", "models/cache", _text,
             "local scratch: training checkpoints, the decode cache, plots"),
    Variable("CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS", 3600.0, _positive_number,
             "how long a training run waits for another one training in the same cache folder"),
    Variable("CLOTHING_MIN_VAL_ACCURACY", 0.5, _number,
             "promotion gate: a challenger below this validation accuracy is rejected"),
    Variable("CLOTHING_PROMOTION_MARGIN", 0.01, _number,
             "a challenger may be at most this much less accurate than the champion on the "
             "same rows"),
    Variable("CLOTHING_KEEP_MODELS", 5, _count,
             "stored versions kept besides the champion and those clothing_test rows name"),
    Variable("CLOTHING_DRIFT_THRESHOLD", 0.25, _number,
             "predicted vs training class-mix distance that raises a drift warning"),
    Variable("CLOTHING_SENSOR_INTERVAL_SECONDS", 60, _positive_int,
             "minimum seconds between two ticks of a sensor"),
    Variable("CLOTHING_RETRAIN_CRON", "0 3 * * 0", _text, "the retraining schedule (UTC)"),
    Variable("DASK_SCHEDULER_ADDRESS", None, _text,
             "an existing Dask scheduler (`tcp://...` or `tls://...`); unset: a LocalCluster"),
    Variable("CLOTHING_DASK_WORKERS", _default_workers, _positive_int,
             "LocalCluster workers (one thread each); default min(4, cores)"),
    Variable("CLOTHING_DASK_WORKER_GPUS", 0, _count,
             "GPUs each LocalCluster worker advertises as the Dask resource `GPU`"),
    Variable("CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS", 300.0, _positive_number,
             "a LocalCluster task that no worker can run fails after this long"),
    Variable("CLOTHING_SCORING_RUNTIME", "torch", _scoring_runtime,
             "CPU scoring: `torch`, `onnxruntime-int8` (the `int8` extra; the model is made once "
             "per version from 100 training images) or `auto`: int8 on CPUs without AMX when "
             "the extra is installed, else torch"),
    Variable("CLOTHING_HTTP_TIMEOUT_SECONDS", 30.0, _positive_number,
             "connect and per-read timeout of one HTTP(S) file read"),
    Variable("CLOTHING_HTTP_DEADLINE_SECONDS", 120.0, _positive_number,
             "the whole of one HTTP(S) file read, retries included"),
    Variable("CLOTHING_MAX_FILE_BYTES", 50_000_000, _positive_int,
             "a stage file larger than this is refused before it is read"),
    Variable("CLOTHING_SERVE_MODEL_FILE", None, _text,
             "serve (and `predict`) this model file instead of the registry's champion"),
    Variable("CLOTHING_SERVE_MAX_BYTES", 20_000_000, _positive_int,
             "model server: a request body larger than this is refused (413) before it is read"),
    Variable("CLOTHING_SERVE_POLL_SECONDS", 5.0, _positive_number,
             "model server: seconds between two looks at the model source for a new version"),
    Variable("CLOTHING_SERVE_MAX_BATCH_SIZE", 16, _positive_int,
             "model server: most images in one forward pass (1: no batching)"),
    Variable("CLOTHING_SERVE_MAX_WAIT_MS", 5.0, _number,
             "model server: longest a forming batch waits for requests still being decoded"),
    Variable("CLOTHING_SERVE_WORKERS", 1, _positive_int,
             "model server: processes, each with its own model; they share out the cores"),
    Variable("CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION", None, _text,
             "the storage integration the Snowflake stages use"),
    Variable("CLOTHING_PRESIGN_EXPIRY_SECONDS", 900, _positive_int,
             "presigned-URL lifetime, 60 to 3600"),
    Variable("SNOWFLAKE_LOGIN_TIMEOUT", 60, _positive_int, "seconds"),
    Variable("SNOWFLAKE_NETWORK_TIMEOUT", 300, _positive_int, "seconds"),
    Variable("SNOWFLAKE_ACCOUNT", None, _text, "who connects", secret=True),
    Variable("SNOWFLAKE_USER", None, _text, "who connects", secret=True),
    Variable("SNOWFLAKE_ROLE", None, _text, "who connects"),
    Variable("SNOWFLAKE_PASSWORD", None, _text, "password auth", secret=True),
    Variable("SNOWFLAKE_PRIVATE_KEY_PATH", None, _text, "key-pair auth, used when set",
             secret=True),
    Variable("SNOWFLAKE_PRIVATE_KEY_PASSWORD", None, _text, "the key's passphrase", secret=True),
    Variable("SNOWFLAKE_WAREHOUSE", None, _text, "where the queries run"),
    Variable("SNOWFLAKE_DATABASE", None, _text, "where the tables live"),
    Variable("SNOWFLAKE_SCHEMA", None, _text, "where the tables live"),
]  # fmt: skip
VARIABLES: dict[str, Variable] = {v.name: v for v in _VARIABLES}


def is_set(name: str) -> bool:
    """Whether the variable `name` is set to a non-blank value."""
    _known(name)
    return bool(os.environ.get(name, "").strip())


def setting(name: str) -> Any:
    """The parsed value of the variable `name`, or its default when unset or blank."""
    variable = _known(name)
    raw = os.environ.get(name, "")
    if not raw.strip():
        return variable.default_value()
    try:
        return variable.parse(raw)
    except ValueError as exc:
        shown = "(hidden)" if variable.secret else repr(raw)
        raise SettingsError(f"{name}={shown} {exc}") from None


def env_or_default(name: str) -> Any:
    """A `dg.EnvVar` when `name` is set (Dagster resolves it at run time), else the default."""
    return dg.EnvVar(name) if is_set(name) else _known(name).default_value()


def _known(name: str) -> Variable:
    try:
        return VARIABLES[name]
    except KeyError:
        raise KeyError(f"{name} is not a setting of clothing_assets (settings.VARIABLES)") from None
