"""Scoring on an existing scheduler reached over `tls://`, with the client
certificate taken from Dask's DASK_DISTRIBUTED__COMM__TLS__* variables; and a LocalCluster task
no worker can run fails after the no-workers timeout instead of waiting for ever."""

from __future__ import annotations

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
from clothing_assets_tests.support import CLASSES, TINY_TRAINING, metadata_of
from clothing_assets_tests.support.processes import dask_cluster


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
    tls = _tls_flags(tls_files)
    with dask_cluster(
        tmp_path,
        [["--name", "tls-0"]],
        scheduler_flags=["--protocol", "tls", *tls],
        worker_flags=tls,
    ) as address:
        yield address


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
