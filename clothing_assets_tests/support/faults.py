"""Fault injection for the fault tests, kept light: Dask workers unpickle these by reference."""

from __future__ import annotations

import os
import signal

from distributed.diagnostics.plugin import WorkerPlugin


class KillWorkerOnceWhileScoring(WorkerPlugin):
    """SIGKILLs the worker process that starts its `nth` scoring task, once per cluster.

    The worker dies like a lost machine: mid-task, with the results of its earlier tasks still
    in its memory. `marker` (created atomically) records the dead worker's pid and task, and
    stops any other or restarted worker from dying too.
    """

    def __init__(self, marker: str, nth: int = 2, prefix: str = "clothing-score-"):
        self.marker, self.nth, self.prefix = marker, nth, prefix
        self.started = 0

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        self.started += 1
        if self.started < self.nth:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {key}".encode())
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


class ForgetModelOnce(WorkerPlugin):
    """Empties the worker's model cache as its first scoring task starts, once per cluster: a
    worker that lost the model (restarted, or joined) after the client checked which workers
    hold it. `marker` records the worker's address and the task."""

    def __init__(self, marker: str, prefix: str = "clothing-score-"):
        self.marker, self.prefix = marker, prefix
        self.worker = None

    def setup(self, worker):
        self.worker = worker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        from clothing_assets.ml import scoring

        with scoring._LOCK:
            scoring._MODELS.clear()
        os.write(fd, f"{self.worker.address} {key}".encode())
        os.close(fd)


class StallWhileMarker(WorkerPlugin):
    """Each worker reads its first `after` files, then holds every later read while the file
    `marker` exists: a run that has written part of its results and is still going. (The hold
    is in the task's own thread; holding in a plugin hook would stall the worker's event loop
    and with it the results already computed.)"""

    def __init__(self, marker: str, after: int):
        self.marker, self.after = marker, after

    def setup(self, worker):
        import threading
        import time

        from clothing_assets.ml import scoring

        real_read, lock, count = scoring._read, threading.Lock(), [0]

        def read(row, limits=None):
            with lock:
                count[0] += 1
                held = count[0] > self.after
            while held and os.path.exists(self.marker):
                time.sleep(0.05)
            return real_read(row, limits)

        scoring._read = read


# Preload (dask config `distributed.worker.preload`: ["clothing_assets_tests.support.faults"])
# for the workers of a LocalCluster a run starts itself, where no plugin can be registered
# beforehand.
EXIT_WHEN_SCORING = "CLOTHING_TEST_EXIT_WHEN_SCORING"
EXIT_MARKER = "CLOTHING_TEST_EXIT_MARKER"


def dask_setup(worker) -> None:
    """The worker process ends at once, as the kernel's OOM killer would end it, whenever it
    starts to read the stage file named by $CLOTHING_TEST_EXIT_WHEN_SCORING, after appending
    its pid to the file $CLOTHING_TEST_EXIT_MARKER. (In the task's thread, like a decoder
    that runs out of memory.)"""
    poison, marker = os.environ.get(EXIT_WHEN_SCORING), os.environ.get(EXIT_MARKER)
    if not (poison and marker):
        return
    from clothing_assets.ml import scoring

    real_read = scoring._read

    def read(row, limits=None):
        if row["RELATIVE_PATH"] == poison:
            with open(marker, "a") as out:
                out.write(f"{os.getpid()} {poison}\n")
            os._exit(137)
        return real_read(row, limits)

    scoring._read = read
