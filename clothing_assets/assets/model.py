"""The model group: `trained_model` trains a challenger, `champion_model` decides which
version serves (the promotion rule, or a person's choice) and shows the registry."""

import sys
import time
from dataclasses import asdict, fields
from typing import get_type_hints

import dagster as dg
import pandas as pd
from pydantic import Field, create_model
from tqdm import tqdm

from clothing_assets.assets.catalog import clothing_train
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_registry import Decision, ModelRegistry, RegistryError
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageResource

DECODE_CACHE_FILE = "decoded_train.pt"


class _TrainConfigBase(dg.Config):
    """What `trained_model` takes beyond the `TrainSettings` fields."""

    decode_cache: bool = Field(
        default=True,
        description="Keep the decoded uint8 images in models/cache/, tied to the catalog rows "
        "(path, size, last-modified), so a re-run with the same files reads no stage file.",
    )

    def settings(self) -> TrainSettings:
        """The `TrainSettings` that `fit` takes, field by field."""
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})


_HINTS = get_type_hints(TrainSettings)
# generated, not restated: every TrainSettings field with its default and description
TrainConfig = create_model(
    "TrainConfig",
    __base__=_TrainConfigBase,
    __doc__=f"Hyperparameters of `trained_model`. {TrainSettings.__doc__}",
    **{
        f.name: (_HINTS[f.name], Field(default=f.default, description=f.metadata["doc"] or None))
        for f in fields(TrainSettings)
    },
)


def _record_decode_errors(context, warehouse: Warehouse, rows: pd.DataFrame, decoded) -> None:
    if not decoded.errors:
        return
    bad = rows.iloc[list(decoded.errors)]
    recorded = warehouse.record_errors(
        "clothing_train",
        pd.DataFrame(
            {"RELATIVE_PATH": bad["RELATIVE_PATH"], "ERROR": list(decoded.errors.values())}
        ),
    )
    context.log.warning(f"{recorded} training files could not be used; see clothing_train.ERROR")


def _compare_with_champion(context, registry: ModelRegistry, images, labels: list[str]):
    """(champion version, its accuracy on these validation rows), or (None, None)."""
    from clothing_assets.ml.train import accuracy_of_model_file

    champion = registry.champion()
    if champion is None or not labels:
        return None, None
    try:
        accuracy = accuracy_of_model_file(registry.load(champion["VERSION"]), images, labels)
    except (RegistryError, ValueError, RuntimeError) as exc:
        context.log.warning(f"champion {champion['VERSION']} could not be evaluated: {exc}")
        return None, None
    context.log.info(
        f"champion {champion['VERSION']}: {accuracy:.3f} on the same {len(labels)} rows"
    )
    return champion["VERSION"], accuracy


@dg.asset(group_name="model", deps=[clothing_train], kinds={"pytorch"}, pool="clothing_training")
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    warehouse: Warehouse,
    train_stage: StageResource,
    model_store: ModelStoreResource,
    model_registry: ModelRegistry,
) -> dg.MaterializeResult:
    """A challenger: a torchvision classifier trained on clothing_train, stored under its
    version in the model store and registered; champion_model decides whether it serves."""
    import torch

    from clothing_assets.ml.data import (
        TrainingDataError,
        catalog_fingerprint,
        decode_training_images,
        job_fingerprint,
        stratified_split,
        training_rows,
    )  # fmt: skip
    from clothing_assets.ml.images import cache_size
    from clothing_assets.ml.train import fit, model_bytes

    settings = config.settings()
    catalog = warehouse.read_catalog("clothing_train")
    try:
        rows = training_rows(catalog, settings.downsample_to, env_var=train_stage.env_var)
    except TrainingDataError as exc:
        raise dg.Failure(str(exc)) from exc
    side, started = cache_size(settings.image_size), time.perf_counter()
    with tqdm(total=len(rows), desc="decode", unit="img", disable=not sys.stderr.isatty()) as bar:
        decoded, cache = decode_training_images(
            rows, lambda batch: warehouse.file_urls(train_stage.name, batch), side,
            cache_path=model_store.cache_root / DECODE_CACHE_FILE if config.decode_cache else None,
            on_image=lambda: bar.update(1), on_warning=context.log.warning,
        )  # fmt: skip
    decode_seconds = time.perf_counter() - started
    context.log.info(f"{len(decoded.kept)} images ready in {decode_seconds:.1f}s (cache {cache})")
    _record_decode_errors(context, warehouse, rows, decoded)
    rows = rows.iloc[decoded.kept].reset_index(drop=True)
    classes = sorted(rows["CLASS"].unique())
    if len(classes) < 2:
        raise dg.Failure("fewer than two classes have decodable images; see clothing_train.ERROR")
    labels = torch.tensor([classes.index(c) for c in rows["CLASS"]], dtype=torch.long)
    train_idx, val_idx = stratified_split(
        rows["RELATIVE_PATH"].tolist(), labels.tolist(), val_fraction=settings.val_fraction
    )
    tr, va = torch.tensor(train_idx, dtype=torch.long), torch.tensor(val_idx, dtype=torch.long)
    context.log.info(
        f"{len(tr)} train / {len(va)} validation images, {len(classes)} classes, "
        f"{settings.architecture} at {settings.image_size}px, at most {settings.n_epochs} epochs"
    )
    result = _fit(context, fit, settings, decoded.images, labels, tr, va, classes, model_store,
                  job_fingerprint(settings, rows))  # fmt: skip
    val_accuracy = result.best_val_accuracy
    compared_with, champion_accuracy = _compare_with_champion(
        context, model_registry, decoded.images[va], [classes[i] for i in labels[va].tolist()]
    )
    version = model_registry.register(
        model_bytes(result.state_dict, classes, settings, val_accuracy=val_accuracy),
        {
            "created_at": pd.Timestamp.now(tz="UTC").to_pydatetime(),
            "architecture": settings.architecture, "image_size": settings.image_size,
            "classes": classes, "val_accuracy": val_accuracy, "val_rows": len(va),
            "train_rows": len(tr), "catalog_fingerprint": catalog_fingerprint(rows),
            "compared_with": compared_with, "champion_val_accuracy": champion_accuracy,
        },
        run_id=context.run.run_id,
    )  # fmt: skip
    context.log.info(f"challenger {version} stored at {model_registry.store.uri(version)}")
    metadata = _metadata(settings, result, classes, labels[va], version, model_store, len(tr))
    metadata.update({
        "decode_seconds": dg.MetadataValue.float(round(decode_seconds, 1)),
        "decode_cache": dg.MetadataValue.text(cache),
        "rows_with_error": dg.MetadataValue.int(
            int(catalog["ERROR"].notna().sum()) + len(decoded.errors)
        ),
        "compared_with_champion": dg.MetadataValue.text(compared_with or "none"),
        "champion_val_accuracy_same_rows": dg.MetadataValue.float(
            float("nan") if champion_accuracy is None else round(champion_accuracy, 4)
        ),
    })  # fmt: skip
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def _fit(context, fit, settings, images, labels, tr, va, classes, model_store, fingerprint):
    """Run `fit` with per-epoch logs and a terminal progress bar."""

    planned = {"epochs": settings.n_epochs}

    def on_plan(plan) -> None:
        planned["epochs"] = plan.epochs
        bar.reset(total=plan.epochs * max(1, len(tr) // settings.batch_size))
        context.log.info(plan.describe())

    def on_epoch(stats, eta: float) -> None:
        val = f"{stats.val_acc:.3f}" if stats.val_acc is not None else "n/a"
        context.log.info(
            f"epoch {stats.epoch}/{planned['epochs']}: loss {stats.train_loss:.4f}, "
            f"train acc {stats.train_acc:.3f}, val acc {val}, "
            f"{stats.images_per_second:.1f} img/s, ETA {eta:.0f}s"
        )

    from clothing_assets.ml.durable import checkpoint_file

    steps = settings.n_epochs * max(1, len(tr) // settings.batch_size)
    # one checkpoint per job, under the cache folder's training lock (taken by fit): a
    # concurrent run's checkpoint is neither resumed nor deleted
    checkpoint = checkpoint_file(model_store.cache_root, fingerprint)
    with tqdm(total=steps, desc="train", unit="step", disable=not sys.stderr.isatty()) as bar:
        result = fit(
            images[tr], labels[tr], images[va], labels[va], classes, settings,
            checkpoint_path=checkpoint, fingerprint=fingerprint, on_warning=context.log.warning,
            on_epoch=on_epoch, progress=lambda _n: bar.update(1), on_plan=on_plan,
        )  # fmt: skip
    checkpoint.unlink(missing_ok=True)
    if result.resumed_from_step:
        context.log.info(f"resumed from the checkpoint at step {result.resumed_from_step}")
    return result


class PromoteConfig(dg.Config):
    """`champion_model`'s run config: empty, it applies the promotion rule to the newest
    challenger; with a version, a person promotes that version (rollback or pinning)."""

    version: str = Field(
        default="",
        description="A stored version to make the champion by hand (see `clothing-assets "
        "models list`); empty: decide on the newest challenger.",
    )
    reason: str = Field(default="", description="Why, recorded in the registry.")


def _registry_metadata(models: pd.DataFrame, decision: Decision | None, deleted) -> dict:
    from clothing_assets.plots import png_markdown, registry_chart_png
    from clothing_assets.reports import registry_table

    champion = models[models["STATUS"] == "champion"]
    metadata = {
        "champion": dg.MetadataValue.text(champion["VERSION"].iloc[0] if len(champion) else "none"),
        "registry": registry_table(models),
        "versions_deleted_by_retention": dg.MetadataValue.json(list(deleted)),
        "decision": dg.MetadataValue.md(
            "no challenger was waiting"
            if decision is None
            else f"**{decision.version}: {'promoted' if decision.promoted else 'rejected'}**: "
            f"{decision.reason}"
        ),
    }
    if len(models):
        png = registry_chart_png(models)
        metadata["validation_accuracy"] = dg.MetadataValue.md(png_markdown(png, "registry"))
    return metadata


@dg.asset(
    group_name="model",
    deps=[trained_model],
    kinds={"duckdb", "snowflake"},
    pool="clothing_warehouse",
    check_specs=[
        dg.AssetCheckSpec(
            "challenger_promoted",
            asset="champion_model",
            description="The newest challenger passed the promotion rule (a failure leaves the "
            "champion, and scoring, as they were).",
        )
    ],
)
def champion_model(
    context: dg.AssetExecutionContext, config: PromoteConfig, model_registry: ModelRegistry
) -> dg.MaterializeResult:
    """The version that scores: the newest challenger when it passes the promotion rule, or
    the version a person promoted; the registry and the last decision in the metadata."""
    run_id = context.run.run_id
    try:
        decision = (
            model_registry.promote(config.version, config.reason, run_id=run_id)
            if config.version
            else model_registry.decide(run_id=run_id)
        )
    except RegistryError as exc:
        raise dg.Failure(description=exc.message) from exc
    if decision is not None:
        log = context.log.info if decision.promoted else context.log.warning
        verdict = "promoted" if decision.promoted else "rejected"
        log(f"{decision.version} {verdict}: {decision.reason}")
    deleted = model_registry.apply_retention(run_id=run_id)
    champion = model_registry.champion()
    models = model_registry.warehouse.read_models()
    return dg.MaterializeResult(
        metadata=_registry_metadata(models, decision, deleted),
        data_version=dg.DataVersion(champion["VERSION"] if champion else "none"),
        check_results=[
            dg.AssetCheckResult(
                check_name="challenger_promoted",
                passed=decision is None or decision.promoted,
                severity=dg.AssetCheckSeverity.ERROR,
                description=None if decision is None else decision.reason,
                metadata={"champion": champion["VERSION"] if champion else "none"},
            )
        ],
    )


def _metadata(settings, result, classes, val_labels, version, model_store, n_train) -> dict:
    from clothing_assets.plots import (
        confusion_matrix,
        confusion_matrix_png,
        per_class_scores,
        png_markdown,
        training_curves_png,
    )  # fmt: skip

    history = result.history
    table = dg.TableMetadataValue(
        records=[
            dg.TableRecord(
                {
                    "epoch": h.epoch,
                    "train_loss": round(h.train_loss, 4),
                    "train_acc": round(h.train_acc, 4),
                    "val_loss": None if h.val_loss is None else round(h.val_loss, 4),
                    "val_acc": None if h.val_acc is None else round(h.val_acc, 4),
                    "lr": float(f"{h.lr:.3g}"),
                    "images_per_s": round(h.images_per_second, 1),
                }
            )
            for h in history
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("epoch", "int"),
                dg.TableColumn("train_loss", "float"),
                dg.TableColumn("train_acc", "float"),
                dg.TableColumn("val_loss", "float"),
                dg.TableColumn("val_acc", "float"),
                dg.TableColumn("lr", "float"),
                dg.TableColumn("images_per_s", "float"),
            ]
        ),
    )
    curves = training_curves_png(
        [h.epoch for h in history], [h.train_loss for h in history],
        [h.val_loss for h in history], [h.train_acc for h in history],
        [h.val_acc for h in history],
    )  # fmt: skip
    (model_store.plots_dir / "training_curves.png").write_bytes(curves)
    total_images = sum(h.images for h in history)
    total_seconds = sum(h.seconds for h in history)
    best = next((h for h in history if h.epoch == result.best_epoch), None)
    metadata = {
        "version": dg.MetadataValue.text(version),
        "architecture": dg.MetadataValue.text(settings.architecture),
        "image_size": dg.MetadataValue.int(settings.image_size),
        "classes": dg.MetadataValue.json(list(classes)),
        "epochs": dg.MetadataValue.int(len(history)),
        "best_epoch": dg.MetadataValue.int(result.best_epoch),
        "val_accuracy": dg.MetadataValue.float(
            float(best.val_acc) if best and best.val_acc is not None else float("nan")
        ),
        "train_images": dg.MetadataValue.int(n_train),
        "val_images": dg.MetadataValue.int(len(val_labels)),
        "history": table,
        "training_curves": dg.MetadataValue.md(png_markdown(curves, "training curves")),
        "training_seconds": dg.MetadataValue.float(round(result.train_seconds, 1)),
        "train_images_per_second": dg.MetadataValue.float(
            round(total_images / total_seconds, 1) if total_seconds else 0.0
        ),
        "device": dg.MetadataValue.text(f"{result.device} ({result.amp_dtype})"),
        "resumed_from_step": dg.MetadataValue.int(result.resumed_from_step),
        "training_steps": dg.MetadataValue.int(result.steps),
        "config": dg.MetadataValue.json(asdict(settings)),
        "cpu_kind": dg.MetadataValue.text(result.cpu_kind),
        **result.plan.metadata(),
    }
    if result.val_predictions is not None and len(val_labels):
        counts = confusion_matrix(
            val_labels.tolist(), result.val_predictions.tolist(), len(classes)
        )
        png = confusion_matrix_png(counts, classes, "validation confusion matrix")
        (model_store.plots_dir / "confusion_matrix_val.png").write_bytes(png)
        precision, recall = per_class_scores(counts)
        rows = ["| class | precision | recall | images |", "|---|---:|---:|---:|"]
        for name, p, r, n in zip(classes, precision, recall, counts.sum(axis=1), strict=True):
            rows.append(f"| {name} | {p:.2f} | {r:.2f} | {n} |")
        metadata["confusion_matrix"] = dg.MetadataValue.md(png_markdown(png, "confusion matrix"))
        metadata["per_class"] = dg.MetadataValue.md("\n".join(rows))
    return metadata
