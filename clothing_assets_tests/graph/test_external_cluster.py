"""Scoring on an existing cluster: `dask scheduler` and two `dask worker` processes on
127.0.0.1, reached through DASK_SCHEDULER_ADDRESS."""

from __future__ import annotations

import dagster as dg
import duckdb
import pytest
from distributed import Client

from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    TINY_TRAINING,
    metadata_of,
    write_image,
)
from clothing_assets_tests.support.processes import dask_cluster


@pytest.fixture
def external_cluster(tmp_path, request):
    """The scheduler's address; `indirect` parametrization with {"gpu_worker": True} makes the
    first worker advertise a `GPU` resource (there is no CUDA here, so it scores on its CPU)."""
    gpu_worker = getattr(request, "param", {}).get("gpu_worker", False)
    workers = [
        ["--name", f"external-{i}", *(["--resources", "GPU=1"] if gpu_worker and i == 0 else [])]
        for i in range(2)
    ]
    with dask_cluster(tmp_path, workers) as address:
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield address


def test_predictions_run_on_an_existing_scheduler_and_its_workers(
    local_env, external_cluster, monkeypatch
):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_cluster)
    config = dg.RunConfig(
        ops={
            "trained_model": {"config": TINY_TRAINING},
            "clothing_predictions": {"config": {"batch_size": 2}},  # several tasks per worker
        }
    )
    result = dg.materialize(all_assets(), resources=resources_for(), run_config=config)
    assert result.success
    meta = metadata_of(result, "clothing_predictions")
    with Client(external_cluster, timeout=30) as client:
        external = set(client.scheduler_info()["workers"])
    # the external workers scored every row (which of them, Dask decides: tiny batches finish
    # faster than the next is submitted, so one worker may take them all)
    assert set(meta["per_worker"]) <= external and len(external) == 2
    assert sum(meta["per_worker"].values()) == 3 * len(CLASSES)
    # the model went to both, and both loaded it before the first batch
    assert meta["model_shipped_to_workers"] == 2 and set(meta["model_load_seconds"]) == external
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM clothing_test"
            " WHERE TYPE IS NOT NULL AND CONFIDENCE BETWEEN 0 AND 1"
        ).fetchone() == (3 * len(CLASSES),)
    # the cluster outlives the run: the resource connected to it and did not shut it down
    with Client(external_cluster, timeout=30) as client:
        assert len(client.scheduler_info()["workers"]) == 2

    # New test images, scored by a second run with the same model: the workers still hold it,
    # so its bytes do not travel again
    for i in range(4):
        write_image(local_env.test / "hat" / f"new_{i}.jpg", COLOURS["hat"], seed=900 + i)
    again = dg.materialize(
        all_assets(),
        selection=["clothing_dataset", "clothing_test", "clothing_predictions"],
        resources=resources_for(),
        run_config=dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 1}}}),
    )
    assert again.success
    meta = metadata_of(again, "clothing_predictions")
    assert meta["rows_scored"] == 4
    assert meta["model_shipped_to_workers"] == 0


@pytest.mark.parametrize("external_cluster", [{"gpu_worker": True}], indirect=True)
def test_scoring_goes_to_the_workers_that_advertise_a_gpu(local_env, external_cluster, monkeypatch):
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", external_cluster)
    config = dg.RunConfig(
        ops={
            "trained_model": {"config": TINY_TRAINING},
            "clothing_predictions": {"config": {"batch_size": 2}},
        }
    )
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        all_assets(), resources=resources_for(), run_config=config, instance=instance
    )
    assert result.success
    meta = metadata_of(result, "clothing_predictions")
    with Client(external_cluster, timeout=30) as client:
        gpu = [
            a
            for a, w in client.scheduler_info()["workers"].items()
            if w.get("resources", {}).get("GPU")
        ]
    # every batch asked for the GPU resource, so only the worker that has one scored; it has
    # no CUDA device here, so it scored on its CPU and the run said so
    assert meta["per_worker"] == {gpu[0]: 3 * len(CLASSES)}
    assert meta["worker_devices"] == {gpu[0]: "cpu"}
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any("advertise a GPU resource but torch finds no CUDA" in m for m in logs)
