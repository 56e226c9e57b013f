"""Predictions: every unscored clothing_test row classified on Dask and written back."""

import os
import time
from collections import Counter
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
from distributed import Client, as_completed
from distributed.client import FutureCancelledError
from pydantic import Field

from clothing_assets.assets.catalog import clothing_test
from clothing_assets.assets.model import trained_model
from clothing_assets.ml.images import ImageDecodeError, decode_image, resize_square
from clothing_assets.ml.scoring import (
    ModelNotLoaded,
    loaded_versions,
    score_batch,
    warm_model,
)
from clothing_assets.ml.train import load_model
from clothing_assets.plots import (
    confusion_matrix,
    confusion_matrix_png,
    gallery_png,
    png_markdown,
)
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.model_store import ModelStoreResource, file_version
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS, Warehouse
from clothing_assets.stage import StageResource, class_of, read_bytes, url_refused


class ScoreConfig(dg.Config):
    """How `clothing_predictions` cuts the work into Dask tasks and where they run."""

    # 16 beats 32 on this CPU: bf16 resnet50 forward at 250 px runs 16.2 vs 13.3 img/s per core
    batch_size: int = Field(default=16, description="Images per Dask task (use 256 on GPUs).")
    device: str = Field(
        default="auto",
        description="'auto': on the workers that advertise a GPU resource (`dask worker "
        "--resources GPU=1`) if any, else on all workers' CPUs; 'cpu'; 'cuda': GPU workers "
        "only.",
    )
    max_batches_in_flight: int = Field(
        default=0,
        description="Batches submitted ahead of finished ones; 0: twice the cluster's threads. "
        "Each batch's file URLs are minted just before it is submitted.",
    )


def choose_gpu(device: str, gpu_addresses: list[str]) -> bool:
    """Whether scoring tasks ask for a GPU worker, from ScoreConfig.device and the workers that
    advertise one."""
    if device not in ("auto", "cpu", "cuda"):
        raise dg.Failure(f"ScoreConfig.device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cuda" and not gpu_addresses:
        raise dg.Failure(
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
    table: pd.DataFrame, classes: list[str], version: str, warehouse: Warehouse, stage: str
) -> bytes | None:
    """A PNG grid of up to 12 of the most confident mistakes of the current model."""
    scored = table[(table["MODEL_VERSION"] == version) & table["TYPE"].notna()].copy()
    scored["LABEL"] = scored["RELATIVE_PATH"].map(class_of)
    wrong = scored[scored["LABEL"].isin(classes) & (scored["LABEL"] != scored["TYPE"])]
    wrong = wrong.sort_values("CONFIDENCE", ascending=False).head(12)
    if wrong.empty:
        return None
    tiles = []
    for row, url in zip(
        wrong.itertuples(), warehouse.file_urls(stage, wrong["RELATIVE_PATH"].tolist()), strict=True
    ):
        try:
            image = resize_square(decode_image(read_bytes(url)), 128)
        except (ImageDecodeError, OSError):
            continue
        tiles.append((image, f"{row.LABEL} → {row.TYPE} ({row.CONFIDENCE:.2f})"))
    return gallery_png(tiles, "most confident mistakes (folder → predicted)") if tiles else None


def rescore_refused(
    context: dg.AssetExecutionContext,
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
    context: dg.AssetExecutionContext,
    client: Client,
    config: ScoreConfig,
    warehouse: Warehouse,
    stage: str,
    todo: pd.DataFrame,
    model_bytes: bytes,
    version: str,
    *,
    use_gpu: bool,
    gpu_addresses: list[str],
) -> tuple[list[dict], int, dict[str, float]]:
    """Score `todo` on the cluster (on `gpu_addresses` when `use_gpu`); return (one result per
    row, workers the model was shipped to, per-worker model load seconds)."""
    results: list[dict] = []
    shipped_to = 0
    load_seconds: dict[str, float] = {}
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = torch_threads_per_task(client)
    # The model travels only to workers that do not hold this version yet: a long-lived
    # cluster keeps it loaded across runs, a fresh LocalCluster gets it once per worker.
    missing = workers_missing_model(client, version)
    shipped = {"future": None}

    def model_future():
        """The model's bytes in the cluster, broadcast afresh if they were never sent or a
        dying worker took the last copy with it."""
        nonlocal shipped_to
        if shipped["future"] is None or shipped["future"].status != "finished":
            shipped["future"] = client.scatter(model_bytes, broadcast=True)
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
            torch_threads=threads, gpu=use_gpu, resources={"GPU": 1} if use_gpu else None,
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
    step, done = max(1, n_batches // 10), 0
    resent: Counter[str] = Counter()
    for future in pending:
        key, rows = rows_of.pop(future.key)
        try:
            part = future.result()
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
        results.extend(part)
        done += 1
        submit_next()
        if done % step == 0 or done == n_batches:
            context.log.info(f"scored {len(results)}/{len(todo)} images")
    results = rescore_refused(
        context, results, todo, warehouse, stage, config.batch_size,
        submit=lambda rows, i: submit(rows, f"retry-{i}", with_model=True),
    )  # fmt: skip
    return results, shipped_to, load_seconds


@dg.asset(group_name="predictions", deps=[clothing_test, trained_model], kinds={"dask"})
def clothing_predictions(
    context: dg.AssetExecutionContext,
    config: ScoreConfig,
    warehouse: Warehouse,
    test_stage: StageResource,
    model_store: ModelStoreResource,
    dask: DaskClusterResource,
) -> dg.MaterializeResult:
    """TYPE, CONFIDENCE, PRED_TIMESTAMP and MODEL_VERSION for every clothing_test row the
    current model has not scored, computed on the Dask cluster and written back at once."""
    if not model_store.model_path.is_file():
        raise dg.Failure(
            f"no trained model at {model_store.model_path}: materialize trained_model first "
            "(or set CLOTHING_MODELS_DIR to the folder that holds model_trained.pt)"
        )
    model_bytes = model_store.model_path.read_bytes()
    version = file_version(model_bytes)
    try:  # fails here, not on every worker, if the file is bad
        _, payload = load_model(model_bytes)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is refused
        raise dg.Failure(
            f"refused the model file {model_store.model_path}: {str(exc).splitlines()[0][:300]}. "
            "Only files written by trained_model load (torch.load with weights_only=True); "
            "materialize trained_model again."
        ) from exc
    classes = payload["classes"]
    accuracy = payload.get("val_accuracy")
    if accuracy is not None and accuracy < model_store.min_val_accuracy:
        raise dg.Failure(
            f"model {version} has validation accuracy {accuracy:.3f}, below the quality gate "
            f"{model_store.min_val_accuracy}: it will not overwrite predictions. Retrain, or "
            "lower CLOTHING_MIN_VAL_ACCURACY."
        )
    todo = warehouse.unscored_rows(version)
    context.log.info(f"model {version}: {len(todo)} clothing_test rows to score")

    client: Client = dask.client
    dashboard = getattr(client, "dashboard_link", None)
    gpu_addresses = gpu_workers(client)
    use_gpu = choose_gpu(config.device, gpu_addresses)
    started = time.perf_counter()
    results: list[dict] = []
    shipped_to, load_seconds = 0, {}
    if len(todo):
        results, shipped_to, load_seconds = score_on_cluster(
            context, client, config, warehouse, test_stage.name, todo, model_bytes, version,
            use_gpu=use_gpu, gpu_addresses=gpu_addresses,
        )  # fmt: skip
    seconds = time.perf_counter() - started
    # Exactly once: Dask re-runs the tasks of a lost worker, and every row must come back once.
    returned = [r["RELATIVE_PATH"] for r in results]
    if len(returned) != len(todo) or set(returned) != set(todo["RELATIVE_PATH"]):
        raise dg.Failure(
            f"scoring returned {len(returned)} results ({len(set(returned))} distinct rows) for "
            f"{len(todo)} rows; nothing was written, the next run scores them again"
        )

    written = 0
    per_worker: Counter[str] = Counter()
    devices: dict[str, str] = {}
    if results:
        frame = pd.DataFrame(results)
        per_worker.update(frame["WORKER"])
        devices = dict(zip(frame["WORKER"], frame["DEVICE"], strict=True))
        on_cpu = sorted(w for w, d in devices.items() if d != "cuda")
        if use_gpu and on_cpu:
            context.log.warning(
                f"workers {', '.join(on_cpu)} advertise a GPU resource but torch finds no CUDA "
                "device there: they scored on their CPUs"
            )
        written = warehouse.write_predictions(frame[PREDICTION_COLUMNS])
        if written != len(frame):
            context.log.warning(
                f"{len(frame) - written} rows changed while being scored and were left for the "
                "next run"
            )
    errors = sum(1 for r in results if r["ERROR"])
    table = warehouse.read_catalog("clothing_test")
    quality = accuracy_against_folders(table, classes, version)
    metadata = {
        "rows_scored": dg.MetadataValue.int(written),
        "rows_with_error": dg.MetadataValue.int(errors),
        "images_per_second": dg.MetadataValue.float(
            round(len(results) / seconds, 1) if results and seconds > 0 else 0.0
        ),
        "model_version": dg.MetadataValue.text(version),
        "accuracy": dg.MetadataValue.float(quality["accuracy"]),
        "labelled_rows": dg.MetadataValue.int(quality["labelled"]),
        "rows_in_table": dg.MetadataValue.int(len(table)),
        "table_rows_with_error": dg.MetadataValue.int(int(table["ERROR"].notna().sum())),
        "per_worker": dg.MetadataValue.json(dict(per_worker)),
        "worker_devices": dg.MetadataValue.json(devices),
        "model_shipped_to_workers": dg.MetadataValue.int(shipped_to),
        "model_load_seconds": dg.MetadataValue.json(
            {a: round(t, 2) for a, t in load_seconds.items()}
        ),
    }
    if dashboard:
        metadata["dask_dashboard"] = dg.MetadataValue.url(dashboard)
    gallery = misclassified_gallery(table, classes, version, warehouse, test_stage.name)
    if gallery is not None:
        metadata["misclassified"] = dg.MetadataValue.md(png_markdown(gallery, "misclassified"))
    if quality["counts"] is not None:
        png = confusion_matrix_png(quality["counts"], classes, "test stage vs folder labels")
        metadata["confusion_matrix"] = dg.MetadataValue.md(png_markdown(png, "confusion matrix"))
    context.log.info(
        f"wrote {written} predictions ({errors} unreadable) in {seconds:.1f}s; "
        f"accuracy vs folders {quality['accuracy']:.3f} over {quality['labelled']} rows"
    )
    return dg.MaterializeResult(metadata=metadata)
