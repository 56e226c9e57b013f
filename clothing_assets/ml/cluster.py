"""Scoring on the Dask cluster, from the client's side: which workers score (GPU or not),
the model shipped once per version, a bounded window of batches whose URLs are minted just
before they are sent, batches resent when a worker lost the model, a batch that kills its
workers split into single rows, refused URLs retried once.
The worker's side is `ml.scoring`. This is the one place to change how images are scored on
the cluster.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
from distributed import Client, as_completed
from distributed.client import FutureCancelledError
from distributed.scheduler import KilledWorker

from clothing_assets.ml.images import ImageDecodeError, decode_image, resize_square
from clothing_assets.ml.scoring import (
    ModelNotLoaded,
    loaded_versions,
    score_batch,
    warm_model,
)
from clothing_assets.plots import confusion_matrix, gallery_png
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.settings import setting
from clothing_assets.stage import class_of, read_bytes, url_refused


def choose_gpu(device: str, gpu_addresses: list[str]) -> bool:
    """Whether scoring tasks ask for a GPU worker, from ScoreConfig.device and the workers that
    advertise one."""
    if device not in ("auto", "cpu", "cuda"):
        raise dg.Failure(
            f"ScoreConfig.device must be 'auto', 'cpu' or 'cuda', got {device!r}",
            allow_retries=False,
        )
    if device == "cuda" and not gpu_addresses:
        raise dg.Failure(
            "device 'cuda' was asked for but no Dask worker advertises a GPU resource: start "
            "workers with `dask worker ... --resources GPU=1` (or set CLOTHING_DASK_WORKER_GPUS "
            "for the local cluster), or score with device 'auto' or 'cpu'",
            allow_retries=False,
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


def accuracy_against_folders(frame: pd.DataFrame, classes: list[str], version: str) -> dict:
    """Accuracy of the current model's predictions against the folder labels it knows."""
    scored = frame[(frame["MODEL_VERSION"] == version) & frame["TYPE"].notna()].copy()
    scored["LABEL"] = scored["RELATIVE_PATH"].map(class_of)
    known = scored[scored["LABEL"].isin(classes)]
    if known.empty:
        return {"accuracy": float("nan"), "labelled": 0, "counts": None}
    index = {c: i for i, c in enumerate(classes)}
    counts = confusion_matrix(
        known["LABEL"].map(index).tolist(), known["TYPE"].map(index).tolist(), len(classes)
    )
    accuracy = float((known["LABEL"] == known["TYPE"]).mean())
    return {"accuracy": accuracy, "labelled": len(known), "counts": counts}


def misclassified_gallery(
    table: pd.DataFrame,
    classes: list[str],
    version: str,
    file_urls: Callable[[Sequence[str]], Sequence[str | None]],
) -> bytes | None:
    """A PNG grid of up to 12 of the most confident mistakes of `version`; `file_urls` mints
    the URLs the images are read from (the warehouse's, for the test stage)."""
    scored = table[(table["MODEL_VERSION"] == version) & table["TYPE"].notna()].copy()
    scored["LABEL"] = scored["RELATIVE_PATH"].map(class_of)
    wrong = scored[scored["LABEL"].isin(classes) & (scored["LABEL"] != scored["TYPE"])]
    wrong = wrong.sort_values("CONFIDENCE", ascending=False).head(12)
    if wrong.empty:
        return None
    tiles = []
    for row, url in zip(
        wrong.itertuples(), file_urls(wrong["RELATIVE_PATH"].tolist()), strict=True
    ):
        try:
            image = resize_square(decode_image(read_bytes(url)), 128)
        except (ImageDecodeError, OSError):
            continue
        tiles.append((image, f"{row.LABEL} → {row.TYPE} ({row.CONFIDENCE:.2f})"))
    return gallery_png(tiles, "most confident mistakes (folder → predicted)") if tiles else None


def rescore_refused(
    context: Any,
    results: list[dict],
    todo: pd.DataFrame,
    warehouse: Warehouse,
    stage: str,
    batch_size: int,
    submit,
) -> list[dict]:
    """Rows whose URL the server refused (an expired presigned URL: see
    `stage.url_refused`) are scored once more with freshly minted URLs, per batch; refused
    again, their ERROR stays and is recorded. Workers cannot mint URLs, so this runs here."""
    refused = {r["RELATIVE_PATH"] for r in results if url_refused(r["ERROR"])}
    if not refused:
        return results
    context.log.warning(f"{len(refused)} file URLs were refused; retrying once with fresh URLs")
    again = todo[todo["RELATIVE_PATH"].isin(refused)]
    futures = []
    for i, start in enumerate(range(0, len(again), batch_size)):
        batch = again.iloc[start : start + batch_size]
        urls = warehouse.file_urls(stage, batch["RELATIVE_PATH"].tolist())  # minted just now
        futures.append(submit(batch.assign(URL=urls).to_dict("records"), i))
    retried = {r["RELATIVE_PATH"]: r for f in as_completed(futures) for r in f.result()}
    return [
        retried.get(r["RELATIVE_PATH"], r) if r["RELATIVE_PATH"] in refused else r for r in results
    ]


def score_on_cluster(
    context: Any,
    client: Client,
    config: Any,
    warehouse: Warehouse,
    stage: str,
    todo: pd.DataFrame,
    model_bytes: bytes,
    version: str,
    *,
    use_gpu: bool,
    gpu_addresses: list[str],
    write: Callable[[list[dict]], int],
    runtime: str = "torch",
) -> tuple[list[dict], int, int, dict[str, float]]:
    """Score `todo` on the cluster (on `gpu_addresses` when `use_gpu`), handing results to
    `write` in chunks of at least `config.write_every` rows as batches complete, so that a run
    killed part way keeps every chunk it wrote; return (one result per row, rows written,
    workers the model was shipped to, per-worker model load seconds). With `runtime`
    "onnxruntime-int8", `model_bytes` are `runtime.scoring_model_bytes`' int8 model.

    (Over 60 lines: the submission window, resends and chunked writes share the loop's state;
    split apart they would pass it all around.)"""
    results: list[dict] = []
    shipped_to = 0
    load_seconds: dict[str, float] = {}
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = torch_threads_per_task(client)
    # The model travels only to workers that do not hold this version yet: a long-lived
    # cluster keeps it loaded across runs, a fresh LocalCluster gets it once per worker.
    missing = workers_missing_model(client, version + ("" if runtime == "torch" else f"@{runtime}"))
    shipped = {"future": None}

    def model_future():
        """The model's bytes in the cluster, broadcast afresh if they were never sent or a
        dying worker took the last copy with it."""
        nonlocal shipped_to
        if shipped["future"] is None or shipped["future"].status != "finished":
            # all workers may be restarting (a file killed them): wait for one as long as a
            # task would, not Dask's 30 s connect timeout
            shipped["future"] = client.scatter(
                model_bytes,
                broadcast=True,
                timeout=setting("CLOTHING_DASK_NO_WORKERS_TIMEOUT_SECONDS"),
            )
            shipped_to = len(client.scheduler_info(n_workers=-1)["workers"])  # as of now
        return shipped["future"]

    run = context.run.run_id
    if missing:
        # Load it on every worker before the first batch: a worker still loading would
        # otherwise see its queued batches stolen and sit idle for the rest of the run.
        eligible = [a for a in missing if not use_gpu or a in gpu_addresses]
        warm = [
            client.submit(
                warm_model,
                model_future(),
                version,
                torch_threads=threads,
                gpu=use_gpu,
                runtime=runtime,
                workers=[a],
                allow_other_workers=True,  # elsewhere if this worker just died
                pure=False,
                key=f"clothing-load-{run}-{a}",
            )  # fmt: skip
            for a in eligible
        ]
        load_seconds = dict(zip(eligible, client.gather(warm), strict=True))
    context.log.info(
        f"model {version} shipped to {shipped_to} workers "
        f"({len(missing)} did not hold it; loaded in "
        f"{max(load_seconds.values(), default=0.0):.1f}s); "
        f"scoring on {'GPU' if use_gpu else 'CPU'}"
    )

    def submit(rows: list[dict], key: str, *, with_model: bool = False):
        # Batches carry no model: every worker holds it by now. Depending on the scattered
        # bytes would let one lost worker cancel every batch (Dask keeps one replica of
        # scattered data once nothing waits on it, and that replica can die with its worker).
        return client.submit(
            score_batch, model_future() if with_model else None, version, rows,
            torch_threads=threads, gpu=use_gpu, runtime=runtime,
            resources={"GPU": 1} if use_gpu else None,
            key=f"clothing-score-{run}-{key}",  # unique per run: concurrent runs never share
            pure=False,
        )  # fmt: skip

    window = config.max_batches_in_flight or max(
        2, 2 * sum(w["nthreads"] for w in workers.values())
    )
    batches = (
        (str(i), todo.iloc[start : start + config.batch_size])
        for i, start in enumerate(range(0, len(todo), config.batch_size))
    )
    n_batches = -(-len(todo) // config.batch_size)
    pending = as_completed(loop=client.loop)  # not the default client's loop
    rows_of: dict[str, tuple[str, list[dict]]] = {}

    def submit_next() -> None:
        key, batch = next(batches, (None, None))
        if batch is None:
            return
        # minted just before use: a presigned URL's clock starts now, not at the run start
        urls = warehouse.file_urls(stage, batch["RELATIVE_PATH"].tolist())
        rows = batch.assign(URL=urls).to_dict("records")
        future = submit(rows, key)
        rows_of[future.key] = (key, rows)
        pending.add(future)

    for _ in range(window):
        submit_next()
    step, done, written = max(1, n_batches // 10), 0, 0
    resent: Counter[str] = Counter()
    chunk: list[dict] = []

    def flush(*, force: bool = False) -> None:
        nonlocal written
        if chunk and (force or len(chunk) >= max(1, config.write_every)):
            written += write(list(chunk))
            chunk.clear()

    alone: set[str] = set()  # batches of one row cut from a batch whose workers died
    for future in pending:
        key, rows = rows_of.pop(future.key)
        try:
            part = future.result()
        except KilledWorker as exc:
            if key in alone:  # this row killed its workers on its own: it gets the ERROR
                part = [worker_died_result(rows[0], version, exc)]
            else:
                context.log.warning(
                    f"the Dask worker(s) scoring batch {key} died ({exc.allowed_failures + 1} "
                    f"time(s)); scoring its {len(rows)} rows one by one"
                )
                n_batches += len(rows) - 1
                for j, row in enumerate(rows):
                    alone.add(f"{key}-alone-{j}")
                    # without the model: every worker may be restarting now, with none to
                    # scatter it to; one that lacks it raises ModelNotLoaded and gets it then
                    again = submit([row], f"{key}-alone-{j}")
                    rows_of[again.key] = (f"{key}-alone-{j}", [row])
                    pending.add(again)
                continue
        except (ModelNotLoaded, FutureCancelledError):
            # a worker that restarted or joined after the check lacks the model, or a batch
            # sent with it lost the bytes with a dying worker: send it again, with the model
            resent[key] += 1
            if resent[key] > 3:
                raise
            again = submit(rows, f"{key}-model-{resent[key]}", with_model=True)
            rows_of[again.key] = (key, rows)
            pending.add(again)
            continue
        check_batch(rows, part)
        results.extend(part)
        chunk.extend(r for r in part if not url_refused(r["ERROR"]))  # those are retried
        flush()
        done += 1
        submit_next()
        if done % step == 0 or done == n_batches:
            context.log.info(f"scored {len(results)}/{len(todo)} images")
    flush(force=True)
    refused = {r["RELATIVE_PATH"] for r in results if url_refused(r["ERROR"])}
    results = rescore_refused(
        context, results, todo, warehouse, stage, config.batch_size,
        submit=lambda rows, i: submit(rows, f"retry-{i}", with_model=True),
    )  # fmt: skip
    chunk.extend(r for r in results if r["RELATIVE_PATH"] in refused)
    flush(force=True)
    return results, written, shipped_to, load_seconds


def worker_died_result(row: dict, version: str, exc: KilledWorker) -> dict:
    """The result of a row whose task, scoring it alone, killed every worker that ran it
    (the nanny kills a worker over its memory limit, or the decoder crashed the process):
    no prediction, and an ERROR that says so. With the model's version it is not scored
    again until the file or the champion changes."""
    worker = getattr(exc.last_worker, "address", str(exc.last_worker))
    return {
        "RELATIVE_PATH": row["RELATIVE_PATH"], "SIZE": row["SIZE"],
        "LAST_MODIFIED": row["LAST_MODIFIED"], "TYPE": None, "CONFIDENCE": None,
        "MODEL_VERSION": version, "WORKER": worker, "DEVICE": None,
        "PRED_TIMESTAMP": datetime.now(UTC),
        "ERROR": (
            "the Dask worker died while scoring this file (KilledWorker: "
            f"{exc.allowed_failures + 1} worker(s) died scoring it alone, the last {worker}); "
            "it may need more memory than a worker has"
        ),
    }  # fmt: skip


def check_batch(sent: list[dict], returned: list[dict]) -> None:
    """Exactly once: a batch's results are its rows, each once, or nothing of it is written."""
    want = sorted(r["RELATIVE_PATH"] for r in sent)
    got = sorted(r["RELATIVE_PATH"] for r in returned)
    if want != got:
        raise RuntimeError(
            f"a scoring batch returned {len(got)} results for {len(want)} rows; it was not "
            "written (the next run scores those rows again)"
        )
