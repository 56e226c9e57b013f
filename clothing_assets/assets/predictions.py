"""Predictions: every unscored clothing_test row classified on Dask and written back."""

import os
import time
from collections import Counter
from urllib.parse import urlsplit

import dagster as dg
import pandas as pd
from dagster_dask.resources import DaskResource
from distributed import Client, as_completed
from pydantic import Field

from clothing_assets.assets.catalog import clothing_test
from clothing_assets.assets.model import trained_model
from clothing_assets.ml.images import ImageDecodeError, decode_image, resize_square
from clothing_assets.ml.scoring import score_batch
from clothing_assets.ml.train import load_model
from clothing_assets.plots import (
    confusion_matrix,
    confusion_matrix_png,
    gallery_png,
    png_markdown,
)
from clothing_assets.resources.model_store import ModelStoreResource, file_version
from clothing_assets.resources.stage import StageResource
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS, Warehouse
from clothing_assets.stage_fs import class_of, read_bytes, url_refused


class ScoreConfig(dg.Config):
    """How `clothing_predictions` cuts the work into Dask tasks."""

    # 16 beats 32 on this CPU: bf16 resnet50 forward at 250 px runs 16.2 vs 13.3 img/s per core
    batch_size: int = Field(default=16, description="Images per Dask task.")


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
    `stage_fs.url_refused`) are scored once more with freshly minted URLs, per batch; refused
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


@dg.asset(group_name="predictions", deps=[clothing_test, trained_model], kinds={"dask"})
def clothing_predictions(
    context: dg.AssetExecutionContext,
    config: ScoreConfig,
    warehouse: Warehouse,
    test_stage: StageResource,
    model_store: ModelStoreResource,
    dask: dg.ResourceParam[DaskResource],
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
    started = time.perf_counter()
    results: list[dict] = []
    if len(todo):
        threads = torch_threads_per_task(client)
        model_future = client.scatter(model_bytes, broadcast=True)
        run = context.run.run_id

        def submit(rows: list[dict], key: str):
            return client.submit(
                score_batch, model_future, version, rows, torch_threads=threads,
                key=f"clothing-score-{run}-{key}",  # unique per run: concurrent runs never share
                pure=False,
            )  # fmt: skip

        futures = []
        for i, start in enumerate(range(0, len(todo), config.batch_size)):
            batch = todo.iloc[start : start + config.batch_size]
            # URLs are minted per batch, just before submission (presigned URLs expire)
            urls = warehouse.file_urls(test_stage.name, batch["RELATIVE_PATH"].tolist())
            rows = batch.assign(URL=urls).to_dict("records")
            futures.append(submit(rows, str(i)))
        step = max(1, len(futures) // 10)
        for done, future in enumerate(as_completed(futures), start=1):
            results.extend(future.result())
            if done % step == 0 or done == len(futures):
                context.log.info(f"scored {len(results)}/{len(todo)} images")
        results = rescore_refused(
            context, results, todo, warehouse, test_stage.name, config.batch_size,
            submit=lambda rows, i: submit(rows, f"retry-{i}"),
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
    if results:
        frame = pd.DataFrame(results)
        per_worker.update(frame["WORKER"])
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
