"""Dask for scoring: dagster-dask's `dask_resource`, local cluster or existing scheduler."""

from typing import Any

import dagster as dg
from dagster_dask import dask_resource


@dg.configured(
    dask_resource,
    config_schema={
        "scheduler_address": dg.Field(
            dg.Noneable(dg.StringSource),
            default_value=None,
            description="An existing scheduler (DASK_SCHEDULER_ADDRESS); unset: a LocalCluster.",
        ),
        "n_workers": dg.Field(int, default_value=2, description="LocalCluster worker processes."),
        "threads_per_worker": dg.Field(int, default_value=1),
        "memory_limit": dg.Field(str, default_value="auto"),
        "worker_gpus": dg.Field(
            int,
            default_value=0,
            description="GPUs each LocalCluster worker advertises as the Dask resource `GPU` "
            "(CLOTHING_DASK_WORKER_GPUS); scoring then runs on them.",
        ),
    },
)
def dask_cluster(config: dict[str, Any]) -> dict[str, Any]:
    """Map our few knobs onto dask_resource's config: client address or a LocalCluster."""
    address = config["scheduler_address"]
    if address:
        return {"client": {"address": address, "timeout": 30}}
    return {
        "cluster": {
            "local": {
                "n_workers": config["n_workers"],
                "threads_per_worker": config["threads_per_worker"],
                "processes": True,
                "host": "127.0.0.1",
                # a free port, so that two runs or a test beside the UI do not collide
                "dashboard_address": "127.0.0.1:0",
                "memory_limit": config["memory_limit"],
                **({"resources": {"GPU": config["worker_gpus"]}} if config["worker_gpus"] else {}),
            }
        }
    }
