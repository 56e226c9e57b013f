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


def _window_hours(raw: str) -> float:
    value = _number(raw)
    if not 1 / 60 <= value <= 87_600:  # NaN fails too
        raise ValueError(
            "is not a number of hours from 1/60 (Dagster's shortest freshness window) to 87600"
        )
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


def _retrain_init(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("champion", "imagenet", "none"):  # defs.assets.warm_start.INITS
        raise ValueError("is not one of champion, imagenet, none")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError("is not one of 1, true, yes, on, 0, false, no, off")
    return value in ("1", "true", "yes", "on")


def _names(raw: str) -> tuple[str, ...]:
    names = tuple(name.strip().lower() for name in raw.split(",") if name.strip())
    if not names:
        raise ValueError("names no host")
    return names


def _default_workers() -> int:
    """min(4, cores)"""
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
             "local scratch: training checkpoints, the decode cache, plots, int8 models and "
             "runtime choices"),
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
    Variable("CLOTHING_RETRAIN_INIT", "champion", _retrain_init,
             "where a scheduled retrain starts: `champion` fine-tunes from the champion's "
             "weights within `champion_train_minutes` (from ImageNet's, with the full budget, "
             "when there is no champion or it has other classes), or `imagenet` / `none`"),
    Variable("CLOTHING_MODEL_MAX_AGE_HOURS", 192.0, _window_hours,
             "trained_model's freshness policy fails once the newest challenger is this old: a "
             "week of the weekly retraining schedule plus a day for its run; keep it above "
             "CLOTHING_RETRAIN_CRON's interval"),
    Variable("CLOTHING_PREDICTIONS_MAX_LAG_HOURS", 24.0, _window_hours,
             "clothing_predictions' freshness policy fails once the latest scoring pass is "
             "this old; the test-stage sensor rescores at half of it when the stage is quiet"),
    Variable("DASK_SCHEDULER_ADDRESS", None, _text,
             "an existing Dask scheduler (`tcp://...` or `tls://...`); unset: a LocalCluster"),
    Variable("CLOTHING_DASK_WORKERS", _default_workers, _positive_int,
             "LocalCluster workers (one thread each)"),
    Variable("CLOTHING_DASK_WORKER_GPUS", 0, _count,
             "GPUs each LocalCluster worker advertises as the Dask resource `GPU`"),
    Variable("CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS", 300.0, _positive_number,
             "a LocalCluster task that no worker can run fails after this long"),
    Variable("CLOTHING_SCORING_RUNTIME", "torch", _scoring_runtime,
             "CPU scoring: `torch`, `onnxruntime-int8` (the `int8` extra; the model is made once "
             "per version from 100 training images) or `auto`: the faster of the two on this "
             "CPU, timed once per model version and CPU kind, int8 only within its accuracy "
             "tolerance; the model server serves the runtime scoring chose"),
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
    Variable("CLOTHING_SERVE_MAX_CONNECTIONS", 200, _positive_int,
             "model server: open connections per process; a request beyond them gets a 503"),
    Variable("CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS", 10.0, _positive_number,
             "model server: a connection that has not sent a whole request head this long "
             "after it opened (or after its last answer) is closed"),
    Variable("CLOTHING_SERVE_BODY_TIMEOUT_SECONDS", 60.0, _positive_number,
             "model server: a request body that has not fully arrived this long after its "
             "head gets a 408"),
    Variable("CLOTHING_SERVE_MAX_INFLIGHT_BYTES", 100_000_000, _positive_int,
             "model server: request-body bytes one process holds at once, all requests "
             "together; an upload that would go beyond gets a 503"),
    Variable("CLOTHING_SERVE_DISCARD_BYTES", 100_000_000, _count,
             "model server: of a refused body (413, 503), read and thrown away up to this "
             "many bytes so the client reads the answer; a longer one is cut off"),
    Variable("CLOTHING_SERVE_DOCS", False, _flag,
             "model server: serve /docs, /redoc and /openapi.json (they load scripts from a "
             "public CDN)"),
    Variable("CLOTHING_SERVE_TRUSTED_HOSTS", ("localhost", "127.0.0.1", "::1"), _names,
             "model server: comma-separated Host names it answers (`*.example.com` "
             "patterns allowed); others get a 400, which stops DNS rebinding"),
    Variable("CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION", None, _text,
             "the storage integration the Snowflake stages use (created once by an administrator)"),
    Variable("CLOTHING_PRESIGN_EXPIRY_SECONDS", 900, _positive_int,
             "Snowflake: presigned-URL lifetime of a scoring batch's images, 60 to 3600"),
    Variable("SNOWFLAKE_LOGIN_TIMEOUT", 60, _positive_int, "seconds a Snowflake login may take"),
    Variable("SNOWFLAKE_NETWORK_TIMEOUT", 300, _positive_int,
             "seconds a Snowflake request may take"),
    Variable("SNOWFLAKE_ACCOUNT", None, _text,
             "the Snowflake account (with CLOTHING_WAREHOUSE unset, setting it selects Snowflake)",
             secret=True),
    Variable("SNOWFLAKE_USER", None, _text, "the Snowflake user", secret=True),
    Variable("SNOWFLAKE_ROLE", None, _text, "the Snowflake role (e.g. `clothing_assets`)"),
    Variable("SNOWFLAKE_PASSWORD", None, _text, "password authentication (or a private key)",
             secret=True),
    Variable("SNOWFLAKE_PRIVATE_KEY_PATH", None, _text, "key-pair authentication, used when set",
             secret=True),
    Variable("SNOWFLAKE_PRIVATE_KEY_PASSWORD", None, _text,
             "the private key's passphrase, if it is encrypted", secret=True),
    Variable("SNOWFLAKE_WAREHOUSE", None, _text,
             "the Snowflake virtual warehouse the queries run on"),
    Variable("SNOWFLAKE_DATABASE", None, _text, "the database of the catalog tables and stages"),
    Variable("SNOWFLAKE_SCHEMA", None, _text, "the schema of the catalog tables and stages"),
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
