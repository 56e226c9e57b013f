"""Predictions: every unscored clothing_test row classified on Dask and written back."""

import time
from collections import Counter

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.assets.catalog import clothing_test
from clothing_assets.assets.model import champion_model
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.model_registry import ModelRegistry, RegistryError
from clothing_assets.resources.warehouse import PREDICTION_COLUMNS, Warehouse
from clothing_assets.stage import StageResource


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
    write_every: int = Field(
        default=256,
        description="Write predictions back in transactions of at least this many rows as "
        "batches complete: a run stopped part way keeps every chunk it wrote.",
    )
    max_batches_in_flight: int = Field(
        default=0,
        description="Batches submitted ahead of finished ones; 0: twice the cluster's threads. "
        "Each batch's file URLs are minted just before it is submitted.",
    )


RUN_FIGURES = (
    "images_per_second", "per_worker", "worker_devices", "model_shipped_to_workers",
    "model_load_seconds",
)  # fmt: skip


@dg.asset(
    group_name="predictions",
    deps=[clothing_test, champion_model],
    kinds={"dask"},
    pool="clothing_scoring",
)
def clothing_predictions(
    context: dg.AssetExecutionContext,
    config: ScoreConfig,
    warehouse: Warehouse,
    test_stage: StageResource,
    model_registry: ModelRegistry,
    dask: DaskClusterResource,
) -> dg.MaterializeResult:
    """TYPE, CONFIDENCE, PRED_TIMESTAMP and MODEL_VERSION for every clothing_test row the
    champion has not scored, computed on the Dask cluster and written back."""
    # torch and the cluster code load here, in the step that scores, not with the location
    from clothing_assets.ml.cluster import (
        accuracy_against_folders,
        choose_gpu,
        gpu_workers,
        misclassified_gallery,
        score_on_cluster,
    )  # fmt: skip
    from clothing_assets.ml.train import load_model
    from clothing_assets.plots import confusion_matrix_png, png_markdown

    try:
        champion, model_bytes = model_registry.load_champion()
    except RegistryError as exc:
        raise dg.Failure(description=exc.message) from exc
    version = champion["VERSION"]
    try:  # fails here, not on every worker, if the file is bad
        _, payload = load_model(model_bytes)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is refused
        raise dg.Failure(
            f"refused the champion's model file ({version}): {str(exc).splitlines()[0][:300]}. "
            "Only files written by trained_model load (torch.load with weights_only=True); "
            "promote another version (`clothing-assets models list`)."
        ) from exc
    classes = payload["classes"]
    todo = warehouse.unscored_rows(version)
    context.log.info(f"model {version}: {len(todo)} clothing_test rows to score")

    client = dask.client
    dashboard = getattr(client, "dashboard_link", None)
    gpu_addresses = gpu_workers(client)
    use_gpu = choose_gpu(config.device, gpu_addresses)
    started = time.perf_counter()
    results: list[dict] = []
    written, shipped_to, load_seconds = 0, 0, {}

    def write(rows: list[dict]) -> int:
        return warehouse.write_predictions(pd.DataFrame(rows)[PREDICTION_COLUMNS])

    if len(todo):
        try:
            results, written, shipped_to, load_seconds = score_on_cluster(
                context, client, config, warehouse, test_stage.name, todo, model_bytes,
                version, use_gpu=use_gpu, gpu_addresses=gpu_addresses, write=write,
            )  # fmt: skip
        except RuntimeError as exc:
            raise dg.Failure(description=f"{exc}; chunks written so far are kept") from exc
    seconds = time.perf_counter() - started
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
        if written != len(frame):
            context.log.warning(
                f"{len(frame) - written} rows changed while being scored (or a newer model "
                "scored them first) and were left for the next run"
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
    if not results:
        # nothing was scored: no per-run throughput, so the UI's plots of those figures keep
        # their last informative point instead of dropping to zero
        for key in RUN_FIGURES:
            metadata.pop(key)
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
