"""`clothing-assets predictions`: the latest scored rows of clothing_test, newest first, and the
rows per class, read from the warehouse without changing it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from dagster_duckdb import DuckDBResource

from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS
from clothing_assets_tests.support import REPO_ROOT

CLI = Path(sys.executable).parent / "clothing-assets"
STAGE = "clothing_dataset"


def _predictions(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([str(CLI), "predictions", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _scored(catalog: pd.DataFrame) -> pd.DataFrame:
    """Four of the nine rows as a scoring run reports them: three classified, one unusable."""
    at = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    answers = {  # path: (class, confidence, minutes after `at`, version, error)
        "hat/hat_0.jpg": ("hat", 0.91, 0, "v1", None),
        "hat/hat_1.jpg": ("hat", 0.80, 5, "v2", None),
        "pants/pants_0.jpg": ("pants", 0.70, 10, "v2", None),
        "shoes/shoes_0.jpg": (None, None, 15, "v2", "not an image: cannot identify image file"),
    }
    frame = catalog[catalog["RELATIVE_PATH"].isin(answers)].copy()
    values = [answers[p] for p in frame["RELATIVE_PATH"]]
    frame["TYPE"] = [v[0] for v in values]
    frame["CONFIDENCE"] = [v[1] for v in values]
    frame["PRED_TIMESTAMP"] = [at + pd.Timedelta(minutes=v[2]) for v in values]
    frame["MODEL_VERSION"] = [v[3] for v in values]
    frame["ERROR"] = [v[4] for v in values]
    return frame[PREDICTION_COLUMNS]


def test_predictions_shows_the_latest_scored_rows_and_the_classes(local_env, tmp_path):
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(local_env.duckdb)))
    warehouse.create_stage(STAGE, str(local_env.test))
    warehouse.refresh_stage(STAGE)
    warehouse.sync_catalog("clothing_test", STAGE)

    unscored = _predictions(cwd=tmp_path)
    assert unscored.returncode == 0, unscored.stderr
    assert "none of the 9 rows of clothing_test is scored yet" in unscored.stdout

    assert warehouse.write_predictions(_scored(warehouse.read_catalog("clothing_test"))) == 4
    before = _digest(local_env.duckdb)
    shown = _predictions("-n", "3", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    latest, classes, summary = shown.stdout.strip().split("\n\n")
    header, *rows = [line.split() for line in latest.splitlines()]
    assert header == ["path", "class", "confidence", "scored_utc", "model_version", "error"]
    assert rows == [
        ["shoes/shoes_0.jpg", "(error)", "2026-03-01", "10:15:00", "v2",
         "not", "an", "image:", "cannot", "identify", "image", "file"],
        ["pants/pants_0.jpg", "pants", "0.700", "2026-03-01", "10:10:00", "v2"],
        ["hat/hat_1.jpg", "hat", "0.800", "2026-03-01", "10:05:00", "v2"],
    ]  # fmt: skip
    assert [line.split() for line in classes.splitlines()] == [
        ["class", "rows"], ["hat", "2"], ["pants", "1"],
    ]  # fmt: skip
    assert summary == "9 rows in clothing_test: 4 scored (1 with an error), 5 not scored yet"
    assert _digest(local_env.duckdb) == before  # read-only: the file is untouched

    every = _predictions(cwd=tmp_path)  # -n 20 by default: all four
    assert every.returncode == 0 and "hat/hat_0.jpg" in every.stdout
