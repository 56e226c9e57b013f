"""Fixtures of every tier; the helpers they use live in `clothing_assets_tests.support`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clothing_assets_tests.support import LocalEnv, make_stage


@pytest.fixture
def local_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalEnv]:
    """Generated train (6 per class) and test (3 per class) stages, and every location
    variable pointed into tmp_path."""
    env = LocalEnv(
        root=tmp_path,
        train=tmp_path / "stage" / "train",
        test=tmp_path / "stage" / "test",
        duckdb=tmp_path / "warehouse" / "clothing.duckdb",
        models=tmp_path / "models",
        cache=tmp_path / "cache",
    )
    make_stage(env.train, 6, seed=0)
    make_stage(env.test, 3, seed=10_000)
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", str(env.train))
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", str(env.test))
    monkeypatch.setenv("CLOTHING_DUCKDB_PATH", str(env.duckdb))
    monkeypatch.setenv("CLOTHING_MODELS_DIR", str(env.models))
    monkeypatch.setenv("CLOTHING_CACHE_DIR", str(env.cache))
    monkeypatch.setenv("CLOTHING_DASK_WORKERS", "2")
    # one-epoch models on nine images are no test of quality; the gate has its own tests
    monkeypatch.setenv("CLOTHING_MIN_VAL_ACCURACY", "0")
    monkeypatch.setenv("CLOTHING_PROMOTION_MARGIN", "1")
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    # explicit: a developer's SNOWFLAKE_ACCOUNT must not turn these tests to Snowflake
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "local")
    yield env
