"""Embeddings: the champion's embedding of every cataloged train and test image.

How it relates to scoring. `clothing_predictions` embeds the test images it scores in the same
Dask pass, from the same decode and forward pass, and writes their clothing_embeddings rows
with each chunk of predictions: a test image is read once. `image_embeddings` runs after it and
embeds what is still missing for the champion: the train stage, and test images that scoring
did not embed (scored before the champion changed, a run stopped between the two writes, or
scored by the int8 runtime, whose ONNX graph answers logits alone: those are read again).
Both go through `ml.cluster.score_on_cluster`, so they keep scoring's guarantees: chunked
write-back, resume after a kill (only rows without an embedding are read again), a per-file
ERROR, rows of changed files left for the next sync.
"""

import time

import dagster as dg
import pandas as pd
from pydantic import Field

from clothing_assets.defs.assets.catalog import clothing_test, clothing_train
from clothing_assets.defs.assets.model import champion_model
from clothing_assets.defs.assets.predictions import _load_champion, clothing_predictions
from clothing_assets.defs.assets.retries import TRANSIENT_FAILURES
from clothing_assets.resources.dask_cluster import DaskClusterResource
from clothing_assets.resources.model_registry import ModelRegistry
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageResource

MAP_POINTS = 3000  # embeddings drawn on the metadata's map at most


class EmbedConfig(dg.Config):
    """How `image_embeddings` cuts the work into Dask tasks."""

    batch_size: int = Field(default=16, description="Images per Dask task.")
    write_every: int = Field(
        default=256,
        description="Write embeddings back in transactions of at least this many rows: a run "
        "stopped part way keeps every chunk it wrote.",
    )


@dg.asset(
    group_name="embeddings",
    deps=[clothing_train, clothing_test, champion_model, clothing_predictions],
    kinds={"dask"},
    pool="clothing_scoring",
    retry_policy=TRANSIENT_FAILURES,
)
def image_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbedConfig,
    warehouse: Warehouse,
    train_stage: StageResource,
    test_stage: StageResource,
    model_registry: ModelRegistry,
    dask: DaskClusterResource,
) -> dg.MaterializeResult:
    """clothing_embeddings: the champion's L2-normalised penultimate-layer embedding of every
    cataloged train and test image (`ml.embeddings`), with the SHA-256 of the bytes read, or
    the ERROR that says why a file has none. Incremental: only files without an embedding of
    the champion (new, changed, or all after a new champion) are read."""
    from clothing_assets.ml.embeddings import embedding_dimension
    from clothing_assets.ml.model_file import ModelFile

    version, model_bytes, _classes = _load_champion(model_registry)
    dimension = embedding_dimension(ModelFile.load(model_bytes).build())
    if warehouse.prepare_embeddings(dimension):
        context.log.info(f"clothing_embeddings made again for {dimension}-float embeddings")
    stale = warehouse.delete_stale_embeddings()
    stages = {"train": train_stage, "test": test_stage}
    todo = {name: warehouse.unembedded_rows(name, version) for name in stages}
    context.log.info(
        f"model {version}: {len(todo['train'])} train and {len(todo['test'])} test images to "
        f"embed ({stale} stale embeddings deleted)"
    )
    started = time.perf_counter()
    done = {
        name: _embed_stage(context, config, dask, warehouse, stage, name, todo[name],
                           version, model_bytes) if len(todo[name]) else (0, 0, 0)
        for name, stage in stages.items()
    }  # fmt: skip
    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata=_metadata(warehouse, version, dimension, done, stale, seconds)
    )


def _embed_stage(
    context: dg.AssetExecutionContext,
    config: EmbedConfig,
    dask: DaskClusterResource,
    warehouse: Warehouse,
    stage: StageResource,
    stage_name: str,
    todo: pd.DataFrame,
    version: str,
    model_bytes: bytes,
) -> tuple[int, int, int]:
    """Embed `todo` of one stage on the cluster (torch on the workers' CPUs), writing each
    chunk as it completes; (rows written, rows with an ERROR, rows left for the next run)."""
    from clothing_assets.ml.cluster import ScoringPlan, score_on_cluster
    from clothing_assets.ml.embeddings import embedding_rows
    from clothing_assets.ml.scoring import deferred_notes

    plan = ScoringPlan(
        version=version, model_bytes=model_bytes, run_id=f"{context.run.run_id}-embed-{stage_name}",
        batch_size=config.batch_size, write_every=config.write_every, max_batches_in_flight=0,
        no_workers_timeout_s=dask.no_workers_timeout_s, embed=True, classify=False,
    )  # fmt: skip
    written_rows: list[dict] = []

    def write(results: list[dict]) -> int:
        rows = embedding_rows(results, stage_name)
        count = warehouse.write_embedding_rows(rows)
        written_rows.extend(rows)
        return count

    try:
        with warehouse.url_session(stage.name):
            results, written, _shipped, _load = score_on_cluster(
                dask.client, plan, todo, write=write, log=context.log,
                file_urls=lambda paths: warehouse.file_urls(stage.name, paths),
            )  # fmt: skip
    except RuntimeError as exc:
        raise dg.Failure(description=f"{exc}; chunks written so far are kept") from exc
    errors = sum(1 for r in written_rows if r["ERROR"])
    left = sum(1 for r in results if r.get("DEFERRED"))
    context.log.info(
        f"{stage_name}: wrote {written} embeddings ({errors} with an ERROR, {left} files left "
        "for the next run)"
    )
    for note in deferred_notes(results):
        context.log.warning(f"{stage_name}: {note}")
    return written, errors, left


def _metadata(
    warehouse: Warehouse,
    version: str,
    dimension: int,
    done: dict[str, tuple[int, int, int]],
    stale: int,
    seconds: float,
) -> dict[str, dg.MetadataValue]:
    """Counts of the run and of the table for the champion, per stage: counted in the
    warehouse; only the map's sample of embeddings is read."""
    per_stage = warehouse.embedding_counts(version)
    table = "\n".join(
        ["| stage | embedded now | errors now | left for the next run | embeddings of the "
         "champion |", "|---|---|---|---|---|"]
        + [f"| {s} | {done[s][0]} | {done[s][1]} | {done[s][2]} | {per_stage.get(s, 0)} |"
           for s in done]
    )  # fmt: skip
    metadata = {
        "model_version": dg.MetadataValue.text(version),
        "dimension": dg.MetadataValue.int(dimension),
        "embedded": dg.MetadataValue.int(sum(n for n, _, _ in done.values())),
        "errors": dg.MetadataValue.int(sum(e for _, e, _ in done.values())),
        # unreadable for the moment or changed since the sync: read again by the next run
        "left_for_next_run": dg.MetadataValue.int(sum(left for _, _, left in done.values())),
        "train_embeddings": dg.MetadataValue.int(int(per_stage.get("train", 0))),
        "test_embeddings": dg.MetadataValue.int(int(per_stage.get("test", 0))),
        "stale_deleted": dg.MetadataValue.int(stale),
        "seconds": dg.MetadataValue.float(round(seconds, 2)),
        "summary": dg.MetadataValue.md(table),
    }
    if sum(per_stage.values()) >= 3:
        shown = warehouse.sample_embeddings(version, MAP_POINTS)
        metadata["embedding_map"] = dg.MetadataValue.md(_embedding_map(warehouse, shown))
    return metadata


def _embedding_map(warehouse: Warehouse, shown: pd.DataFrame) -> str:
    """The map of the sampled embeddings `shown` (`plots.embedding_map_png`) as inline
    markdown."""
    import numpy as np

    from clothing_assets.plots import embedding_map_png, png_markdown
    from clothing_assets.stage import class_of

    predicted = warehouse.read_catalog("clothing_test").set_index("RELATIVE_PATH")["TYPE"]
    labels = [
        class_of(path) if stage == "train" else predicted.get(path)
        for path, stage in zip(shown["RELATIVE_PATH"], shown["STAGE"], strict=True)
    ]
    labels = [None if pd.isna(label) else label for label in labels]
    png = embedding_map_png(np.stack(shown["EMBEDDING"].to_list()), labels,
                            shown["STAGE"].tolist(), f"{len(shown)} embeddings")  # fmt: skip
    return png_markdown(png, "embedding map")
