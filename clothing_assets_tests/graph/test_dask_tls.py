"""Hardening item 12: scoring on an existing scheduler reached over `tls://`, with the client
certificate taken from Dask's DASK_DISTRIBUTED__COMM__TLS__* variables; and a LocalCluster task
no worker can run fails after the no-workers timeout instead of waiting for ever."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import dask
import pytest
from distributed import Client
from distributed.scheduler import NoValidWorkerError
from distributed.security import Security

from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets_tests.support import CLASSES, REPO_ROOT, TINY_TRAINING, metadata_of

DASK = Path(sys.executable).parent / "dask"
ROOT = REPO_ROOT


@pytest.fixture
def tls_files(tmp_path) -> dict[str, str]:
    """A throwaway self-signed CA/cert/key (Dask's own `Security.temporary()`), as files."""
    temporary = Security.temporary()
    files = {}
    for name, pem in (
        ("ca", temporary.tls_ca_file),
        ("cert", temporary.tls_scheduler_cert),
        ("key", temporary.tls_scheduler_key),
    ):
        files[name] = str(tmp_path / f"{name}.pem")
        Path(files[name]).write_text(pem)
    return files


def _tls_flags(files: dict[str, str]) -> list[str]:
    return ["--tls-ca-file", files["ca"], "--tls-cert", files["cert"], "--tls-key", files["key"]]


@pytest.fixture
def tls_cluster(tmp_path, tls_files):
    """A `dask scheduler --protocol tls` and one TLS worker on 127.0.0.1; yields the address."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = (tmp_path / "cluster.log").open("w")
    run = dict(stdout=logs, stderr=subprocess.STDOUT, cwd=ROOT)
    procs = [
        subprocess.Popen(
            [
                str(DASK),
                "scheduler",
                "--protocol",
                "tls",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(scheduler_file),
                *_tls_flags(tls_files),
            ],
            **run,
        )  # fmt: skip
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, "no scheduler"
            time.sleep(0.2)
        time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        procs.append(
            subprocess.Popen(
                [
                    str(DASK),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--name",
                    "tls-0",
                    "--no-dashboard",
                    "--memory-limit",
                    "3GiB",
                    *_tls_flags(tls_files),
                ],
                **run,
            )  # fmt: skip
        )
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        logs.close()


@pytest.fixture
def tls_environment(monkeypatch, tls_files):
    """The client certificate in Dask's own variables, read into its config as at import."""
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", tls_files["ca"])
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT", tls_files["cert"])
    monkeypatch.setenv("DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY", tls_files["key"])
    dask.config.refresh()
    yield
    monkeypatch.undo()
    dask.config.refresh()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scoring_runs_on_a_tls_scheduler_named_by_dask_scheduler_address(
    local_env, tls_cluster, tls_environment, monkeypatch
):
    assert tls_cluster.startswith("tls://127.0.0.1:")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", tls_cluster)
    config = dg.RunConfig(
        ops={
            "trained_model": {"config": TINY_TRAINING},
            "clothing_predictions": {"config": {"batch_size": 2}},
        }
    )
    result = dg.materialize(all_assets(), resources=resources_for(), run_config=config)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    meta = metadata_of(result, "clothing_predictions")
    with Client(tls_cluster, security=Security(), timeout=30) as client:
        workers = set(client.scheduler_info()["workers"])
    assert all(w.startswith("tls://") for w in workers)
    assert set(meta["per_worker"]) <= workers
    assert sum(meta["per_worker"].values()) == 3 * len(CLASSES)


def test_a_tls_address_without_a_client_certificate_fails_naming_the_variables(monkeypatch):
    for name in ("CA_FILE", "CLIENT__CERT", "CLIENT__KEY"):
        monkeypatch.delenv(f"DASK_DISTRIBUTED__COMM__TLS__{name}", raising=False)
    resource = DaskClusterResource(scheduler_address="tls://127.0.0.1:1")
    with (
        pytest.raises(dg.Failure, match="DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"),
        resource.connect(),
    ):
        pass


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_task_no_local_worker_can_run_fails_after_the_no_workers_timeout():
    resource = DaskClusterResource(n_workers=1, no_workers_timeout_s=1.0)
    with resource.connect() as client:
        started = time.monotonic()
        future = client.submit(sum, [1, 2], resources={"GPU": 1})  # no worker has a GPU
        with pytest.raises(NoValidWorkerError):
            future.result(timeout=60)
        assert time.monotonic() - started < 30
