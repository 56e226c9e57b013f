"""Predictions: every unscored clothing_test row classified on Dask and written back."""

import time
from collections.abc import Callable
from typing import NamedTuple

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.defs.assets.catalog import clothing_test
from clothing_assets.defs.assets.model import champion_model
from clothing_assets.defs.assets.retries import TRANSIENT_FAILURES
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.model_registry import ModelRegistry, RegistryError
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageResource


class ScoreConfig(dg.Config):
    """How `clothing_predictions` cuts the work into Dask tasks and where they run."""

    # 16: a bf16 ResNet50 forward at 250 px ran 16.2 img/s per core at batch 16 against 13.3 at
    # 32 on a 2-core CPU (BENCHMARKS.md, Inference runtimes)
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


@dg.asset(
    group_name="predictions",
    deps=[clothing_test, champion_model],
    kinds={"dask"},
    pool="clothing_scoring",
    retry_policy=TRANSIENT_FAILURES,
)
def clothing_predictions(
    context: dg.AssetExecutionContext,
    config: ScoreConfig,
    warehouse: Warehouse,
    test_stage: StageResource,
    train_stage: StageResource,
    model_registry: ModelRegistry,
    dask: DaskClusterResource,
) -> dg.MaterializeResult:
    """TYPE, CONFIDENCE, PRED_TIMESTAMP and MODEL_VERSION for every clothing_test row the
    champion has not scored, computed on the Dask cluster and written back.

    Scoring with torch, the same pass embeds each scored test image (`ml.embeddings`: from the
    same decode and forward pass, never a second read) and writes its clothing_embeddings row
    with each chunk of predictions; `image_embeddings` embeds the train stage and any test
    image still without an embedding of the champion (all of them when the int8 runtime
    scored: its ONNX graph answers logits alone)."""
    from clothing_assets.reports import scoring_metadata

    version, model_bytes, classes = _load_champion(model_registry)
    todo = warehouse.unscored_rows(version)
    context.log.info(f"model {version}: {len(todo)} clothing_test rows to score")
    run = (
        _score(context, dask, config, warehouse, test_stage, train_stage, model_registry,
               todo, model_bytes, version)
        if len(todo)
        else _ScoringRun()  # nothing to score: no cluster is started
    )  # fmt: skip
    metadata = scoring_metadata(
        warehouse.read_catalog("clothing_test"), classes, version, run.results,
        written=run.written, seconds=run.seconds, shipped_to=run.shipped_to,
        load_seconds=run.load_seconds, dashboard=run.dashboard,
        gallery_urls=lambda paths: warehouse.file_urls(test_stage.name, paths),
    )  # fmt: skip
    metadata["runtime"] = dg.MetadataValue.text(run.runtime)
    context.log.info(
        f"wrote {run.written} predictions in {run.seconds:.1f}s; accuracy vs folders "
        f"{metadata['accuracy'].value:.3f} over {metadata['labelled_rows'].value} rows"
    )
    return dg.MaterializeResult(metadata=metadata)


class _ScoringRun(NamedTuple):
    """What one step's scoring did (all empty when there was nothing to score)."""

    results: list[dict] = []
    written: int = 0
    shipped_to: int = 0
    load_seconds: dict[str, float] = {}
    seconds: float = 0.0
    dashboard: str | None = None
    runtime: str = "none"  # what scored: torch or onnxruntime-int8


def _score(
    context,
    dask: DaskClusterResource,
    config: ScoreConfig,
    warehouse: Warehouse,
    test_stage: StageResource,
    train_stage: StageResource,
    model_registry: ModelRegistry,
    todo: pd.DataFrame,
    model_bytes: bytes,
    version: str,
) -> _ScoringRun:
    """Score `todo` on the cluster (started here, at the first use of `dask.client`) with the
    chosen device and runtime, writing predictions back as chunks complete. A RuntimeError
    from scoring (a batch that broke the exactly-once rule, a model resent too often) fails
    the step; the chunks written so far stay."""
    # torch and the cluster code load here, in the step that scores, not with the location
    from clothing_assets.ml.cluster import (
        DeviceUnavailable,
        ScoringPlan,
        choose_gpu,
        gpu_workers,
        score_on_cluster,
    )

    client = dask.client
    gpu_addresses = gpu_workers(client)
    try:
        use_gpu = choose_gpu(config.device, gpu_addresses)
    except DeviceUnavailable as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    runtime, model_bytes = _runtime_model(
        context, client, use_gpu, version, model_bytes, warehouse, train_stage, model_registry
    )
    plan = ScoringPlan(
        version=version, model_bytes=model_bytes, run_id=context.run.run_id,
        batch_size=config.batch_size, write_every=config.write_every,
        max_batches_in_flight=config.max_batches_in_flight,
        no_workers_timeout_s=dask.no_workers_timeout_s,
        runtime=runtime, use_gpu=use_gpu, gpu_addresses=tuple(gpu_addresses),
        embed=runtime == "torch",  # the int8 graph answers logits alone
    )  # fmt: skip
    started = time.perf_counter()
    try:
        # every batch's URLs are minted on one warehouse connection for the whole step
        with warehouse.url_session(test_stage.name):
            results, written, shipped_to, load_seconds = score_on_cluster(
                client, plan, todo, log=context.log,
                write=lambda rows: write_scored(warehouse, rows, context.log.warning),
                file_urls=lambda paths: warehouse.file_urls(test_stage.name, paths),
            )  # fmt: skip
    except RuntimeError as exc:
        raise dg.Failure(description=f"{exc}; chunks written so far are kept") from exc
    _warn_about_the_run(context, results, written, use_gpu=use_gpu)
    return _ScoringRun(
        results, written, shipped_to, load_seconds, time.perf_counter() - started,
        getattr(client, "dashboard_link", None), runtime,
    )  # fmt: skip


def write_scored(warehouse: Warehouse, rows: list[dict], warn: Callable[[str], None]) -> int:
    """Write a chunk of scoring results: the predictions, then the test images' embeddings
    (each its own transaction; a run stopped in between leaves embeddings for
    `image_embeddings` to make). Returns the predictions written."""
    from clothing_assets.ml.embeddings import embedding_rows

    written = warehouse.write_prediction_rows(rows)
    try:
        warehouse.write_embedding_rows(embedding_rows(rows, "test"))
    except Exception as exc:  # noqa: BLE001
        # the embeddings are a by-product here: a warehouse that refuses them must not fail
        # the scoring whose rows are written; image_embeddings makes them, or fails saying why
        warn(f"{len(rows)} test embeddings not written with their predictions "
             f"({type(exc).__name__}: {exc}); image_embeddings makes them")  # fmt: skip
    return written


def _runtime_model(
    context, client, use_gpu, version, model_bytes, warehouse, train_stage, model_registry
) -> tuple[str, bytes]:
    """(runtime, bytes the workers load) for CLOTHING_SCORING_RUNTIME: the int8 model is made
    once per version, calibrated on 100 training images, and cached with the model store's
    scratch; `auto` measures torch and int8 on this CPU (`runtime_choice`) and scores with
    torch when a worker lacks ONNX Runtime."""
    import functools

    from clothing_assets.ml.runtime import (
        TORCH,
        RuntimeUnavailable,
        resolve_runtime,
        scoring_model_bytes,
        workers_lacking_runtime,
    )
    from clothing_assets.settings import setting

    asked = setting("CLOTHING_SCORING_RUNTIME")
    try:
        runtime = resolve_runtime(asked, gpu=use_gpu)
    except RuntimeUnavailable as exc:
        raise dg.Failure(description=str(exc)) from exc
    lacking = workers_lacking_runtime(client) if asked != TORCH and not use_gpu else []
    if lacking and asked == "auto":
        context.log.info(f"scoring with torch: workers {lacking} lack the `int8` extra")
        return TORCH, model_bytes
    if lacking:
        raise dg.Failure(
            f"CLOTHING_SCORING_RUNTIME={asked} but workers {lacking} lack the `int8` extra "
            "(onnxruntime, onnx): install it there, or score with torch"
        )
    cache = model_registry.store.cache_root
    calibration = functools.cache(lambda: _calibration_images(warehouse, train_stage))

    def model_for(name: str) -> bytes:
        return scoring_model_bytes(
            model_bytes, version, name, calibration, cache, on_warning=context.log.warning
        )

    if asked == "auto" and not use_gpu:
        runtime = _measured_runtime(
            context, client, model_bytes, version, model_for, calibration, cache
        )
    context.log.info(f"scoring runtime: {runtime}")
    return runtime, model_for(runtime)


def _measured_runtime(context, client, model_bytes, version, model_for, calibration, cache) -> str:
    """`auto`'s runtime for this model on this CPU (`runtime_choice.choose_runtime`), timed
    with the torch threads each Dask task scores with."""
    from clothing_assets.ml.cluster import torch_threads_per_task
    from clothing_assets.ml.runtime import ORT_INT8
    from clothing_assets.ml.runtime_choice import choose_runtime

    choice = choose_runtime(
        model_bytes, version, lambda: model_for(ORT_INT8), calibration, cache,
        threads=torch_threads_per_task(client), on_warning=context.log.warning,
    )  # fmt: skip
    context.log.info(choice.describe())
    return choice.runtime


def _calibration_images(warehouse: Warehouse, train_stage: StageResource) -> list[bytes]:
    """100 training images spread over the catalog (every class), for int8 calibration."""
    from clothing_assets.stage import read_bytes

    paths = sorted(warehouse.read_catalog("clothing_train")["RELATIVE_PATH"])
    chosen = paths[:: max(1, len(paths) // 100)][:100]
    blobs = []
    for url in warehouse.file_urls(train_stage.name, chosen):
        try:
            blobs.append(read_bytes(url))
        except (OSError, ValueError):
            continue  # a missing or refused file: calibrate on the others
    return blobs


def _load_champion(registry: ModelRegistry) -> tuple[str, bytes, list[str]]:
    """(version, file bytes, classes) of the champion, or a Failure that says what to do."""
    from clothing_assets.ml.model_file import ModelFile

    try:
        champion, model_bytes = registry.load_champion()
    except RegistryError as exc:
        raise dg.Failure(description=exc.message, allow_retries=False) from exc
    version = champion["VERSION"]
    try:  # fails here, not on every worker, if the file is bad
        model_file = ModelFile.load(model_bytes)
        model_file.build()  # weights that do not fit the network are refused here too
        classes = list(model_file.classes)
    except Exception as exc:  # noqa: BLE001 - any unreadable or unsafe file is refused
        raise dg.Failure(
            f"refused the champion's model file ({version}): {str(exc).splitlines()[0][:300]}. "
            "Only files written by trained_model load (torch.load with weights_only=True); "
            "promote another version (`clothing-assets models list`).",
            allow_retries=False,
        ) from exc
    return version, model_bytes, classes


def _warn_about_the_run(context, results: list[dict], written: int, *, use_gpu: bool) -> None:
    from clothing_assets.ml.scoring import deferred_notes

    devices = {r["WORKER"]: r["DEVICE"] for r in results if r["DEVICE"]}  # None: it died
    on_cpu = sorted(w for w, d in devices.items() if d != "cuda")
    if use_gpu and on_cpu:
        context.log.warning(
            f"workers {', '.join(on_cpu)} advertise a GPU resource but torch finds no CUDA "
            "device there: they scored on their CPUs"
        )
    for note in deferred_notes(results):
        context.log.warning(note)
    left = sum(1 for r in results if r.get("DEFERRED"))
    if written != len(results) - left:
        context.log.warning(
            f"{len(results) - left - written} rows changed while being scored (or a newer "
            "model scored them first) and were left for the next run"
        )
