"""Processes a test starts and must end: a free port, waiting for a server to answer,
stopping processes, and a `dask scheduler` with its `dask worker`s on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from clothing_assets_tests.support import REPO_ROOT

DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(port: int, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    """Return once a Dagster webserver on `port` answers /server_info; fail with the end of
    `log` if `proc` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5)
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text()[-3000:]) from None
            time.sleep(1)


def stop(procs: Sequence[subprocess.Popen], timeout: float = 30) -> None:
    """Terminate `procs` (the last started first), killing any that outlives `timeout`."""
    for proc in reversed(procs):
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def dask_cluster(
    folder: Path,
    workers: Sequence[Sequence[str]],
    *,
    scheduler_flags: Sequence[str] = (),
    worker_flags: Sequence[str] = (),
) -> Iterator[str]:
    """A `dask scheduler` and one single-thread `dask worker` (3 GiB) per entry of `workers`
    (that worker's own flags: its --name, --resources) on 127.0.0.1, with `scheduler_flags`
    and `worker_flags` added (TLS); yields the scheduler's address, does not wait for the
    workers. Their output goes to `folder`/cluster.log; all are stopped on exit."""
    scheduler_file = folder / "scheduler.json"
    logs = (folder / "cluster.log").open("w")
    run = dict(stdout=logs, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    procs = [
        subprocess.Popen(
            [
                str(DASK),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(scheduler_file),
                *scheduler_flags,
            ],
            **run,
        )  # fmt: skip
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert time.monotonic() < deadline and procs[0].poll() is None, "no scheduler"
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written in one go, but give it a moment
        address = json.loads(scheduler_file.read_text())["address"]
        for own_flags in workers:
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
                        "--no-dashboard",
                        "--memory-limit",
                        "3GiB",
                        *own_flags,
                        *worker_flags,
                    ],
                    **run,
                )  # fmt: skip
            )
        yield address
    finally:
        stop(procs)
        logs.close()
