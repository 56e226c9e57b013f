"""The Dagster UI's server: a real dagster-webserver on 127.0.0.1, queried over GraphQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

from clothing_assets_tests.support import REPO_ROOT
from clothing_assets_tests.support.processes import free_port, stop, wait_until_serving

ROOT = REPO_ROOT
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"

OVERVIEW = """
{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name } sensors { name } schedules { name } }
    }
  }
  assetNodes {
    assetKey { path }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
}
"""
LAUNCH = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""
STATUS = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.load(response)
    assert "errors" not in body, body
    return body["data"]


@pytest.fixture
def webserver(local_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    # runs launched from the UI start at once (no daemon in this test to dequeue them)
    (home / "dagster.yaml").write_text(
        "run_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n"
    )
    port = free_port()
    log = (tmp_path / "webserver.log").open("w")
    proc = subprocess.Popen(
        [str(WEBSERVER), "-h", "127.0.0.1", "-p", str(port)],  # the location: [tool.dg]
        cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until_serving(port, proc, tmp_path / "webserver.log", timeout=180)
        yield port
    finally:
        stop([proc])
        log.close()


def test_webserver_shows_the_project_and_runs_a_job(webserver, local_env):
    data = _graphql(webserver, OVERVIEW)
    [repo] = data["repositoriesOrError"]["nodes"]
    assert {j["name"] for j in repo["jobs"]} >= {
        "sync_catalogs", "train_model", "score_test_images", "promote_model", "everything",
    }  # fmt: skip
    assert {s["name"] for s in repo["sensors"]} == {
        "clothing_stage_observer",
        "clothing_automation",
    }
    assert not repo["schedules"]  # retraining is trained_model's automation condition
    assets = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert set(assets) == {
        "clothing_dataset_train", "clothing_dataset", "clothing_train", "clothing_test",
        "trained_model", "champion_model", "clothing_predictions",
        "image_embeddings", "near_duplicates", "label_issues",
    }  # fmt: skip
    checks = {c["name"] for n in assets.values() for c in n["assetChecksOrError"]["checks"]}
    assert {"challenger_promoted", "predictions_complete"} <= checks

    params = {
        "selector": {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "jobName": "sync_catalogs",
        },
        "runConfigData": {},
    }
    launched = _graphql(webserver, LAUNCH, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    deadline = time.monotonic() + 300
    status = None
    while time.monotonic() < deadline:
        status = _graphql(webserver, STATUS, {"id": run_id})["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            break
        time.sleep(2)
    assert status == "SUCCESS"
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM clothing_train").fetchone() == (18,)
        assert conn.execute("SELECT count(*) FROM clothing_test").fetchone() == (9,)


DG = Path(sys.executable).parent / "dg"


def _dg_env(home: Path) -> dict[str, str]:
    # VIRTUAL_ENV: dg compares it with the project's .venv and warns when it is unset
    return {**os.environ, "DAGSTER_HOME": str(home), "VIRTUAL_ENV": sys.prefix}


def _session_processes(sid: int) -> list[str]:
    """Command lines of the live (not zombie) processes in the Unix session `sid` (setsid)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(cmdline[:120])
    return found


def test_dg_check_defs_passes(local_env, tmp_path):
    result = subprocess.run(
        [str(DG), "check", "defs"], cwd=ROOT, env=_dg_env(tmp_path), capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_dev_stops_on_ctrl_c_and_leaves_no_process(local_env, tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the UI, the
    daemon and the code servers must all end, none left running in the background."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = free_port()
    log = (tmp_path / "dg.log").open("w")
    proc = subprocess.Popen(
        [str(DG), "dev", "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
        env=_dg_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # a test runner may have been started with SIGINT ignored; a terminal's shell is not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        wait_until_serving(port, proc, tmp_path / "dg.log", timeout=240)
        assert len(_session_processes(proc.pid)) >= 3  # dg, the webserver, the daemon, ...
        os.killpg(proc.pid, signal.SIGINT)
        # about 9 s from SIGINT to the last process on this 2-core machine; the bound allows
        # a loaded CI runner
        proc.wait(timeout=90)
        # a code server gets no SIGINT of its own: it ends when its parent's heartbeats stop
        # (45 s), so allow that long and a little more
        deadline = time.monotonic() + 60
        while _session_processes(proc.pid) and time.monotonic() < deadline:
            time.sleep(1)
        assert _session_processes(proc.pid) == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
