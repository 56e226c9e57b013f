"""Test helpers shared by every tier: tiny generated image stages, the local environment,
running the graph and reading what it wrote."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
from PIL import Image

# the repository's root (pyproject.toml declares the code location) and the shared dataset
# beside it
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASET = REPO_ROOT.parent / "shared" / "clothing-dataset-small"

CLASSES = ("hat", "pants", "shoes")
# One distinct colour per class, so even a one-epoch model can tell them apart.
COLOURS = {"hat": (220, 40, 40), "pants": (40, 200, 60), "shoes": (40, 60, 220)}


def write_image(path: Path, colour: tuple[int, int, int], *, seed: int, size: int = 40) -> Path:
    """A small noisy JPEG dominated by `colour`."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, format="JPEG", quality=90)
    return path


def make_stage(root: Path, per_class: int, *, seed: int = 0, classes=CLASSES) -> list[Path]:
    """`root/<class>/<class>_<i>.jpg` for each class; returns the files."""
    files = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            files.append(
                write_image(root / name / f"{name}_{i}.jpg", COLOURS[name], seed=seed + 100 * c + i)
            )
    return files


@dataclass
class LocalEnv:
    """Paths of one test's embedded deployment."""

    root: Path
    train: Path
    test: Path
    duckdb: Path
    models: Path
    cache: Path


TINY_TRAINING = {
    "architecture": "resnet18",
    "weights": "none",
    "image_size": 32,
    "n_epochs": 1,
    "batch_size": 8,
    "checkpoint_every": 0,
    # the generated stages' images of a class are one colour: near_duplicates pairs every train
    # image with a test image, and leaving them out would leave nothing to train on
    "exclude_leaked": False,
}
TINY_RUN_CONFIG = dg.RunConfig(ops={"trained_model": {"config": TINY_TRAINING}})
# fakesnow cannot parse Snowflake's VECTOR type, so on it the graph runs without the embeddings
# and what reads them (they run on DuckDB here, and on a live Snowflake account)
WITHOUT_EMBEDDINGS = dg.AssetSelection.all() - dg.AssetSelection.groups("embeddings", "review")


def materialize(
    selection: str | list[str] = "*",
    run_config: dg.RunConfig | None = TINY_RUN_CONFIG,
    *,
    checks: bool = False,
    resources: dict | None = None,
    **kwargs,
) -> dg.ExecuteInProcessResult:
    """Materialize `selection` of the real assets (and checks) on the environment's resources
    (or on `resources`); "*" is the whole graph with the stages' observations, as the
    `everything` job runs it."""
    from clothing_assets.definitions import all_assets, all_checks
    from clothing_assets.defs.jobs import stages
    from clothing_assets.environment import resources_for

    if selection == "*":
        selection = stages | dg.AssetSelection.all()

    return dg.materialize(
        [*all_assets(), *(all_checks() if checks else [])],
        resources=resources_for() if resources is None else resources,
        selection=selection,
        run_config=run_config,
        raise_on_error=False,
        **kwargs,
    )


def read_table(env: LocalEnv, name: str) -> pd.DataFrame:
    """A whole catalog table from the test's DuckDB file, ordered by path."""
    with duckdb.connect(str(env.duckdb), read_only=True) as conn:
        return conn.execute(f"SELECT * FROM {name} ORDER BY RELATIVE_PATH").df()


def metadata_of(result: dg.ExecuteInProcessResult, key: str) -> dict:
    """The metadata values of the one materialization (or, for an observed asset such as a
    stage, the one observation its own step made: a catalog's sync also observes its stage)
    of asset `key` in `result`."""
    events = [
        e.event_specific_data
        for e in result.all_events
        if e.asset_key is not None
        and e.asset_key.to_user_string() == key
        and (
            e.event_type_value == "ASSET_MATERIALIZATION"
            or (e.event_type_value == "ASSET_OBSERVATION" and e.step_key == key)
        )
    ]
    [event] = [getattr(e, "materialization", None) or e.asset_observation for e in events]
    return {k: v.value for k, v in event.metadata.items()}


def champion_version(env: LocalEnv) -> str | None:
    """The registry's champion in the test's DuckDB file."""
    with duckdb.connect(str(env.duckdb), read_only=True) as conn:
        row = conn.execute(
            "SELECT VERSION FROM clothing_models WHERE STATUS = 'champion'"
        ).fetchone()
    return row[0] if row else None


def register_model(
    env: LocalEnv, data: bytes, *, status: str = "champion", val_accuracy: float | None = 0.9
) -> str:
    """Store `data` in the test's model store and register it (as the champion by default),
    the way training and a promotion would; returns its version."""
    import hashlib
    from datetime import UTC, datetime

    from dagster_duckdb import DuckDBResource

    from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
    from clothing_assets.resources.model_store import ModelStoreResource
    from clothing_assets.resources.warehouse import ModelRecord

    store = ModelStoreResource(directory=str(env.models), cache_directory=str(env.cache))
    version = store.put(data)
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(env.duckdb)))
    record = ModelRecord(
        version=version, sha256=hashlib.sha256(data).hexdigest(), uri=store.uri(version),
        created_at=datetime.now(UTC), architecture="resnet18", image_size=32,
        classes=list(CLASSES), val_accuracy=val_accuracy, val_rows=3, train_rows=9,
        catalog_fingerprint="test",
    )  # fmt: skip
    warehouse.register_model(record)
    if status != "challenger":
        warehouse.change_model_status(version, status, "registered by a test")
    return version


def sensor_tick(sensor: dg.SensorDefinition, cursor: str | None, instance: dg.DagsterInstance):
    """One evaluation of `sensor` on this environment's resources: (result, new cursor)."""
    from clothing_assets.environment import resources_for

    resources = resources_for()
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in sensor.required_resource_keys},
    ) as context:
        return sensor(context), context.cursor


def step_failure(result: dg.ExecuteInProcessResult) -> dg.SerializableErrorInfo:
    """The error of the run's one failed step."""
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.error
