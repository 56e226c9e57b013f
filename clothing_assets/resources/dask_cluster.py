"""Dask for scoring: a LocalCluster, or an existing scheduler over `tcp://` or `tls://`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import dagster as dg
import dask
from distributed import Client, LocalCluster
from distributed.security import Security
from pydantic import Field, PrivateAttr

from clothing_assets.stage import redact_url

TLS_VARIABLES = (
    "DASK_DISTRIBUTED__COMM__TLS__CA_FILE",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT",
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY",
)


def tls_security(address: str) -> Security | None:
    """For a `tls://` address, Dask's Security from its config, which Dask fills from the
    DASK_DISTRIBUTED__COMM__TLS__* variables when it is imported; None for other addresses."""
    if not address.startswith("tls://"):
        return None
    security = Security()
    if not (security.tls_ca_file and security.tls_client_cert):
        raise dg.Failure(
            f"DASK_SCHEDULER_ADDRESS {redact_url(address)} is a tls:// scheduler but no client "
            f"certificate is configured: set {', '.join(TLS_VARIABLES)}"
        )
    return security


class DaskClusterResource(dg.ConfigurableResource):
    """A `distributed.Client` for one run (`.client`): to an existing scheduler
    (DASK_SCHEDULER_ADDRESS, `tcp://` or `tls://`), else to a LocalCluster started for the run
    and closed after it. An existing cluster outlives the run."""

    scheduler_address: str | None = Field(
        default=None, description="An existing scheduler (DASK_SCHEDULER_ADDRESS); unset: local."
    )
    n_workers: int = Field(default=2, description="LocalCluster worker processes.")
    threads_per_worker: int = Field(default=1)
    memory_limit: str = Field(default="auto")
    worker_gpus: int = Field(
        default=0,
        description="GPUs each LocalCluster worker advertises as the Dask resource `GPU` "
        "(CLOTHING_DASK_WORKER_GPUS); scoring then runs on them.",
    )
    no_workers_timeout_s: float = Field(
        default=300.0,
        description="A LocalCluster task no worker can run fails after this long instead of "
        "waiting for ever (distributed.scheduler.no-workers-timeout; "
        "CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS).",
    )
    allowed_failures: int = Field(
        default=1,
        description="A LocalCluster task whose worker died is run again on another worker this "
        "many times, then fails with KilledWorker (distributed.scheduler.allowed-failures; "
        "Dask's default is 3). Scoring then scores that batch's rows one by one, so a file that "
        "kills workers costs few restarts and only its own row; 1 spares a row whose worker "
        "died of something else.",
    )
    connect_timeout_s: float = Field(default=30.0)

    _client: Client | None = PrivateAttr(default=None)
    _stack: ExitStack | None = PrivateAttr(default=None)

    @property
    def client(self) -> Client:
        """The run's client, connected (or its LocalCluster started) on first use, so that
        the start-up is the scoring step's time and a run that never scores pays none; only
        inside a run (Dagster closes it when the run ends)."""
        if self._stack is None:
            raise dg.DagsterInvariantViolationError("the Dask client exists only during a run")
        if self._client is None:
            self._client = self._stack.enter_context(self.connect())
        return self._client

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[DaskClusterResource]:
        with ExitStack() as stack:
            self._stack = stack
            try:
                yield self
            finally:
                self._client = None
                self._stack = None

    @contextmanager
    def connect(self) -> Iterator[Client]:
        """A client to the configured scheduler, or to a LocalCluster started (and closed) here."""
        if self.scheduler_address:
            address = self.scheduler_address
            with Client(
                address, security=tls_security(address), timeout=self.connect_timeout_s
            ) as client:
                yield client
            return
        resources = {"resources": {"GPU": self.worker_gpus}} if self.worker_gpus else {}
        # read by the scheduler LocalCluster starts in this process
        scheduler = {
            "distributed.scheduler.no-workers-timeout": f"{self.no_workers_timeout_s}s",
            "distributed.scheduler.allowed-failures": self.allowed_failures,
            # a worker holds only the tasks it runs (Dask's 1.1 queues one more on it): when
            # it dies, only those count against allowed-failures, not an innocent queued one
            "distributed.scheduler.worker-saturation": 1.0,
        }
        with (
            dask.config.set(scheduler),
            LocalCluster(
                n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker,
                processes=True,
                host="127.0.0.1",
                # a free port, so that two runs or a test beside the UI do not collide
                dashboard_address="127.0.0.1:0",
                memory_limit=self.memory_limit,
                **resources,
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
