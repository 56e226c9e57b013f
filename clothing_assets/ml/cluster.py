"""Scoring on the Dask cluster, from the client's side: which workers score (GPU or not),
the model shipped once per version, a bounded window of batches whose URLs are minted just
before they are sent, batches resent when a worker lost the model, a batch that kills its
workers split into single rows, refused URLs retried once.
The worker's side is `ml.scoring`. This is the one place to change how images are scored on
the cluster. It takes plain values (`ScoringPlan`), callables and a logger, and raises plain
exceptions: the asset turns them into Dagster failures.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple
from urllib.parse import urlsplit

import pandas as pd
from distributed import Client, Future, as_completed
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from clothing_assets.ml.scoring import (
    ModelNotLoaded,
    blank_result,
    loaded_versions,
    score_batch,
    warm_model,
)
from clothing_assets.stage import url_refused

FileUrls = Callable[[Sequence[str]], Sequence[str | None]]


class DeviceUnavailable(ValueError):
    """The scoring device asked for is not a device, or no worker offers it; the message
    says what to change."""


@dataclass(frozen=True)
class ScoringPlan:
    """What one cluster scoring run scores with and how it cuts the work: the model, where
    it runs, the batches in flight, the chunks written back."""

    version: str
    model_bytes: bytes = field(repr=False)  # `runtime.scoring_model_bytes`' for int8
    run_id: str  # makes every Dask key of the run its own
    batch_size: int  # rows per Dask task
    write_every: int  # rows per write-back transaction, at least
    max_batches_in_flight: int  # 0: twice the cluster's threads
    no_workers_timeout_s: float  # how long shipping the model waits for a worker
    runtime: str = "torch"
    use_gpu: bool = False
    gpu_addresses: tuple[str, ...] = ()
    embed: bool = False  # results carry EMBEDDING, CONTENT_SHA256, PHASH (`scoring.score_batch`)
    classify: bool = True  # False with `embed`: embeddings alone, without the mirrored pass


class ClusterScores(NamedTuple):
    """What a cluster scoring run did."""

    results: list[dict]  # one per row of `todo`
    written: int  # rows the write-back accepted
    shipped_to: int  # workers the model bytes were sent to
    load_seconds: dict[str, float]  # per worker that loaded the model


def choose_gpu(device: str, gpu_addresses: Sequence[str]) -> bool:
    """Whether scoring tasks ask for a GPU worker, from the device asked for ('auto', 'cpu'
    or 'cuda') and the workers that advertise one."""
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceUnavailable(
            f"ScoreConfig.device must be 'auto', 'cpu' or 'cuda', got {device!r}"
        )
    if device == "cuda" and not gpu_addresses:
        raise DeviceUnavailable(
            "device 'cuda' was asked for but no Dask worker advertises a GPU resource: start "
            "workers with `dask worker ... --resources GPU=1` (or set CLOTHING_DASK_WORKER_GPUS "
            "for the local cluster), or score with device 'auto' or 'cpu'"
        )
    return device != "cpu" and bool(gpu_addresses)


def torch_threads_per_task(client: Client) -> int:
    """Torch threads per Dask thread such that, on every host, threads never exceed cores."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    cores = client.run(os.cpu_count)
    per_host: Counter[str] = Counter()
    for address, worker in info.items():
        per_host[urlsplit(address).hostname or address] += worker["nthreads"]
    threads = [
        max(1, (cores.get(address) or 1) // per_host[urlsplit(address).hostname or address])
        for address in info
    ]
    return min(threads) if threads else 1


def gpu_workers(client: Client) -> list[str]:
    """Addresses of the workers that advertise a `GPU` resource."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return [a for a, w in info.items() if (w.get("resources") or {}).get("GPU", 0) > 0]


def workers_missing_model(client: Client, version: str) -> list[str]:
    """Workers that do not hold `version` loaded (all of a fresh LocalCluster; none of a
    long-lived cluster that scored with this model before)."""
    held = client.run(loaded_versions)
    return sorted(a for a, versions in held.items() if version not in versions)


def score_on_cluster(
    client: Client,
    plan: ScoringPlan,
    todo: pd.DataFrame,
    *,
    file_urls: FileUrls,
    write: Callable[[list[dict]], int],
    log: logging.Logger,
) -> ClusterScores:
    """Score `todo` on the cluster as `plan` says, minting each batch's URLs with
    `file_urls` just before it is sent and handing results to `write` in chunks of at least
    `plan.write_every` rows as batches complete, so that a run killed part way keeps every
    chunk it wrote. A batch that breaks the exactly-once rule, or a model resent too often,
    raises RuntimeError; the chunks written so far stay."""
    return _ClusterScoring(client, plan, todo, file_urls, write, log).run()


class _ClusterScoring:
    """One `score_on_cluster` run: the model shipped once, a bounded window of batches in
    flight, batches resent or split when workers fail, results written back in chunks."""

    def __init__(
        self,
        client: Client,
        plan: ScoringPlan,
        todo: pd.DataFrame,
        file_urls: FileUrls,
        write: Callable[[list[dict]], int],
        log: logging.Logger,
    ) -> None:
        """Hold the run's inputs and its empty state; nothing is sent yet."""
        self.client, self.plan, self.todo = client, plan, todo
        self.file_urls, self.write, self.log = file_urls, write, log
        self.results: list[dict] = []
        self.written = 0
        self.shipped_to = 0
        self.load_seconds: dict[str, float] = {}
        self.shipped: Future | None = None  # the scattered model bytes
        self.threads = 1
        self.rows_of: dict[str, tuple[str, list[dict]]] = {}  # future key -> (batch key, rows)
        self.resent: Counter[str] = Counter()
        self.alone: set[str] = set()  # batches of one row cut from a batch whose workers died
        self.chunk: list[dict] = []  # results not yet written
        self.done = 0
        self.n_batches = -(-len(todo) // plan.batch_size)
        self.step = max(1, self.n_batches // 10)  # log progress every tenth of the batches
        self.batches: Iterator[tuple[str, pd.DataFrame]] = (
            (str(i), todo.iloc[start : start + plan.batch_size])
            for i, start in enumerate(range(0, len(todo), plan.batch_size))
        )
        self.pending = as_completed(loop=client.loop)  # not the default client's loop

    def run(self) -> ClusterScores:
        """Ship the model, score every batch, retry refused URLs; the result of the run."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        self.threads = torch_threads_per_task(self.client)
        self.ship_model()
        window = self.plan.max_batches_in_flight or max(
            2, 2 * sum(w["nthreads"] for w in workers.values())
        )
        for _ in range(window):
            self.submit_next()
        self.collect()
        self.flush(force=True)
        self.retry_refused()
        return ClusterScores(self.results, self.written, self.shipped_to, self.load_seconds)

    def model_future(self) -> Future:
        """The model's bytes in the cluster, broadcast afresh if they were never sent or a
        dying worker took the last copy with it."""
        if self.shipped is None or self.shipped.status != "finished":
            # all workers may be restarting (a file killed them): wait for one as long as a
            # task would, not Dask's 30 s connect timeout
            self.shipped = self.client.scatter(
                self.plan.model_bytes,
                broadcast=True,
                timeout=self.plan.no_workers_timeout_s,
            )
            self.shipped_to = len(self.client.scheduler_info(n_workers=-1)["workers"])  # now
        return self.shipped

    def ship_model(self) -> None:
        """Load the model on the workers that do not hold this version yet, and log it."""
        # The model travels only to workers that do not hold this version yet: a long-lived
        # cluster keeps it loaded across runs, a fresh LocalCluster gets it once per worker.
        suffix = "" if self.plan.runtime == "torch" else f"@{self.plan.runtime}"
        missing = workers_missing_model(self.client, self.plan.version + suffix)
        if missing:
            # Load it on every worker before the first batch: a worker still loading would
            # otherwise see its queued batches stolen and sit idle for the rest of the run.
            eligible = [a for a in missing if not self.plan.use_gpu or a in self.plan.gpu_addresses]
            warm = [
                self.client.submit(
                    warm_model,
                    self.model_future(),
                    self.plan.version,
                    torch_threads=self.threads,
                    gpu=self.plan.use_gpu,
                    runtime=self.plan.runtime,
                    workers=[a],
                    allow_other_workers=True,  # elsewhere if this worker just died
                    pure=False,
                    key=f"clothing-load-{self.plan.run_id}-{a}",
                )  # fmt: skip
                for a in eligible
            ]
            self.load_seconds = dict(zip(eligible, self.client.gather(warm), strict=True))
        self.log.info(
            f"model {self.plan.version} shipped to {self.shipped_to} workers "
            f"({len(missing)} did not hold it; loaded in "
            f"{max(self.load_seconds.values(), default=0.0):.1f}s); "
            f"scoring on {'GPU' if self.plan.use_gpu else 'CPU'}"
        )

    def submit(self, rows: list[dict], key: str, *, with_model: bool = False) -> Future:
        """One scoring task for `rows`, its Dask key unique to this run and `key`."""
        # Batches carry no model: every worker holds it by now. Depending on the scattered
        # bytes would let one lost worker cancel every batch (Dask keeps one replica of
        # scattered data once nothing waits on it, and that replica can die with its worker).
        return self.client.submit(
            score_batch, self.model_future() if with_model else None, self.plan.version, rows,
            torch_threads=self.threads, gpu=self.plan.use_gpu, runtime=self.plan.runtime,
            embed=self.plan.embed, classify=self.plan.classify,
            resources={"GPU": 1} if self.plan.use_gpu else None,
            key=f"clothing-score-{self.plan.run_id}-{key}",  # unique per run: never shared
            pure=False,
        )  # fmt: skip

    def track(self, future: Future, key: str, rows: list[dict]) -> None:
        """Wait for `future` among the pending ones, remembering the batch it scores."""
        self.rows_of[future.key] = (key, rows)
        self.pending.add(future)

    def submit_next(self) -> None:
        """Send the next batch of `todo`, if any is left, with URLs minted for it now."""
        key, batch = next(self.batches, (None, None))
        if batch is None:
            return
        # minted just before use: a presigned URL's clock starts now, not at the run start
        urls = self.file_urls(batch["RELATIVE_PATH"].tolist())
        rows = batch.assign(URL=urls).to_dict("records")
        self.track(self.submit(rows, key), key, rows)

    def collect(self) -> None:
        """Take batches as they finish, until none is pending: accept, split or resend each."""
        for future in self.pending:
            key, rows = self.rows_of.pop(future.key)
            try:
                part = future.result()
            except KilledWorker as exc:
                if key not in self.alone:
                    self.split(key, rows, exc)
                    continue
                # this row killed its workers on its own: it gets the ERROR
                part = [worker_died_result(rows[0], self.plan.version, exc)]
            except (ModelNotLoaded, FutureCancelledError):
                if not self.resend_with_model(key, rows):
                    raise
                continue
            self.accept(rows, part)

    def split(self, key: str, rows: list[dict], exc: KilledWorker) -> None:
        """Score a batch whose workers died again row by row, to find the row that kills."""
        self.log.warning(
            f"the Dask worker(s) scoring batch {key} died ({exc.allowed_failures + 1} "
            f"time(s)); scoring its {len(rows)} rows one by one"
        )
        self.n_batches += len(rows) - 1
        for j, row in enumerate(rows):
            self.alone.add(f"{key}-alone-{j}")
            # without the model: every worker may be restarting now, with none to
            # scatter it to; one that lacks it raises ModelNotLoaded and gets it then
            self.track(self.submit([row], f"{key}-alone-{j}"), f"{key}-alone-{j}", [row])

    def resend_with_model(self, key: str, rows: list[dict]) -> bool:
        """Send a batch again with the model; False once it was resent three times."""
        # a worker that restarted or joined after the check lacks the model, or a batch
        # sent with it lost the bytes with a dying worker
        self.resent[key] += 1
        if self.resent[key] > 3:
            return False
        self.track(self.submit(rows, f"{key}-model-{self.resent[key]}", with_model=True), key, rows)
        return True

    def accept(self, rows: list[dict], part: list[dict]) -> None:
        """Keep a finished batch's results, write them when a chunk is full, send the next."""
        check_batch(rows, part)
        self.results.extend(part)
        # refused URLs are retried at the end; deferred rows are left for the next run
        self.chunk.extend(r for r in part if not url_refused(r["ERROR"]) and not deferred(r))
        self.flush()
        self.done += 1
        self.submit_next()
        if self.done % self.step == 0 or self.done == self.n_batches:
            self.log.info(f"scored {len(self.results)}/{len(self.todo)} images")

    def flush(self, *, force: bool = False) -> None:
        """Write the pending chunk once it holds `plan.write_every` rows (or when forced)."""
        if self.chunk and (force or len(self.chunk) >= max(1, self.plan.write_every)):
            self.written += self.write(list(self.chunk))
            self.chunk.clear()

    def retry_refused(self) -> None:
        """Rows whose URL the server refused (an expired presigned URL: see
        `stage.url_refused`) are scored once more with freshly minted URLs, per batch, and
        written; refused again, their ERROR stays and is recorded. Workers cannot mint URLs,
        so this runs here."""
        refused = {r["RELATIVE_PATH"] for r in self.results if url_refused(r["ERROR"])}
        if not refused:
            return
        self.log.warning(f"{len(refused)} file URLs were refused; retrying once with fresh URLs")
        again = self.todo[self.todo["RELATIVE_PATH"].isin(refused)]
        futures = []
        for i, start in enumerate(range(0, len(again), self.plan.batch_size)):
            batch = again.iloc[start : start + self.plan.batch_size]
            urls = self.file_urls(batch["RELATIVE_PATH"].tolist())  # minted just now
            rows = batch.assign(URL=urls).to_dict("records")
            futures.append(self.submit(rows, f"retry-{i}", with_model=True))
        retried = {r["RELATIVE_PATH"]: r for f in as_completed(futures) for r in f.result()}
        self.results = [retried.get(r["RELATIVE_PATH"], r) for r in self.results]
        self.chunk.extend(
            r for r in self.results if r["RELATIVE_PATH"] in refused and not deferred(r)
        )
        self.flush(force=True)


def worker_died_result(row: dict, version: str, exc: KilledWorker) -> dict:
    """The result of a row whose task, scoring it alone, killed every worker that ran it
    (the nanny kills a worker over its memory limit, or the decoder crashed the process):
    no prediction, and an ERROR that says so. With the model's version it is not scored
    again until the file or the champion changes."""
    worker = getattr(exc.last_worker, "address", str(exc.last_worker))
    result = blank_result(row, version, worker, None)  # DEVICE None: nothing ran to the end
    result["PRED_TIMESTAMP"] = datetime.now(UTC)
    result["ERROR"] = (
        "the Dask worker died while scoring this file (KilledWorker: "
        f"{exc.allowed_failures + 1} worker(s) died scoring it alone, the last {worker}); "
        "it may need more memory than a worker has"
    )
    return result


def deferred(result: dict) -> bool:
    """Whether a scoring result is left unwritten for the next run (`ml.scoring._read`)."""
    return bool(result.get("DEFERRED"))


def check_batch(sent: list[dict], returned: list[dict]) -> None:
    """Exactly once: a batch's results are its rows, each once, or nothing of it is written."""
    want = sorted(r["RELATIVE_PATH"] for r in sent)
    got = sorted(r["RELATIVE_PATH"] for r in returned)
    if want != got:
        raise RuntimeError(
            f"a scoring batch returned {len(got)} results for {len(want)} rows; it was not "
            "written (the next run scores those rows again)"
        )
