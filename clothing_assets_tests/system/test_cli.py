"""The documented CLI: `dagster asset materialize -m clothing_assets.definitions --select '*'`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dagster as dg
import duckdb

from clothing_assets_tests.support import CLASSES, REPO_ROOT, TINY_TRAINING

ROOT = REPO_ROOT


def test_cli_materializes_everything_with_run_config(local_env, tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    config = {"ops": {"trained_model": {"config": TINY_TRAINING}}}
    result = subprocess.run(
        [
            sys.executable, "-m", "dagster", "asset", "materialize",
            "-m", "clothing_assets.definitions", "--select", "*",
            "--config-json", json.dumps(config),
        ],
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "RUN_SUCCESS" in result.stderr
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        rows, scored, types = conn.execute(
            "SELECT count(*), count(MODEL_VERSION), list(DISTINCT TYPE) FROM clothing_test"
        ).fetchone()
    assert rows == scored == 3 * len(CLASSES)
    assert set(types) <= set(CLASSES)
    # every step and check ran in the run's own process: no per-step process start-up
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        [run] = instance.get_runs(limit=1)
        events = [
            record.event_log_entry.dagster_event
            for record in instance.get_records_for_run(run.run_id, limit=10_000).records
            if record.event_log_entry.is_dagster_event
        ]
    pids = {e.pid for e in events if e.step_key is not None and e.pid is not None}
    assert len(pids) == 1, pids  # 16 with a process per step and check
