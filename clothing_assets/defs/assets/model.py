"""The model group: `trained_model` trains a challenger, `champion_model` decides which
version serves (the promotion rule, or a person's choice) and shows the registry."""

import hashlib
import sys
import time
from dataclasses import fields, replace
from typing import TYPE_CHECKING, get_type_hints

import dagster as dg
import pandas as pd
from pydantic import Field, create_model
from tqdm import tqdm

from clothing_assets.defs.assets.catalog import clothing_train
from clothing_assets.defs.assets.warm_start import Start, WarmStartRefused
from clothing_assets.defs.automation import FROM_AUTOMATION_TAG
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_registry import Decision, ModelRegistry, RegistryError
from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.settings import setting
from clothing_assets.stage import StageResource

if TYPE_CHECKING:  # torch loads with the step that trains, not with the code location
    from clothing_assets.ml.data import DecodedImages, LabelledImages
    from clothing_assets.ml.train import FitResult

DECODE_CACHE_FILE = "decoded_train.pt"


class _TrainConfigBase(dg.Config):
    """What `trained_model` takes beyond the `TrainSettings` fields."""

    decode_cache: bool = Field(
        default=True,
        description="Keep the decoded uint8 images in models/cache/, tied to the catalog rows "
        "(path, size, last-modified), so a re-run with the same files reads no stage file.",
    )
    init: str = Field(
        default="imagenet",
        description="Where training starts: 'champion': fine-tune from the champion's weights "
        "(refused when its classes or architecture differ from this run's; with no champion "
        "yet, as `weights` says), 'imagenet' or 'none' (random). Given alone, `weights` "
        "decides between the last two.",
    )
    champion_train_minutes: float = Field(
        default=2.25,
        description="The training budget of a run that starts from the champion's weights, "
        "unless max_train_minutes is given: on repeated splits with a tenth of the images new, "
        "fine-tuning the champion for half the epochs matched a fresh start's accuracy "
        "(BENCHMARKS.md, Warm start).",
    )
    exclude_leaked: bool = Field(
        default=True,
        description="Leave out the train images that near_duplicates paired with a test image "
        "(clothing_near_duplicates), so that the test stage measures unseen images.",
    )

    def settings(self, *, scheduled: bool = False) -> TrainSettings:
        """The `TrainSettings` that `fit` takes, field by field; `weights` as `init` decides
        when `init` is imagenet or none."""
        values = {f.name: getattr(self, f.name) for f in fields(TrainSettings)}
        init = self.resolved_init(scheduled=scheduled)
        if init != "champion":
            values["weights"] = init
        return TrainSettings(**values)

    def resolved_init(self, *, scheduled: bool = False) -> str:
        """`init` as the run applies it (`warm_start.resolve_init`); a `scheduled` retrain
        whose config gives neither `init` nor `weights` starts as CLOTHING_RETRAIN_INIT says."""
        from clothing_assets.defs.assets.warm_start import resolve_init

        given = self.model_fields_set
        if scheduled and not given & {"init", "weights"}:
            return setting("CLOTHING_RETRAIN_INIT")
        return resolve_init(
            self.init, self.weights, init_given="init" in given, weights_given="weights" in given
        )

    def budgeted(self, settings: TrainSettings, start: Start) -> TrainSettings:
        """`settings` with `champion_train_minutes` as the budget when the run starts from the
        champion's weights and the config gives no `max_train_minutes`."""
        if start.init != "champion" or "max_train_minutes" in self.model_fields_set:
            return settings
        return replace(settings, max_train_minutes=self.champion_train_minutes)


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


def _compare_with_champion(
    context: dg.AssetExecutionContext, registry: ModelRegistry, data: "LabelledImages"
) -> tuple[str | None, float | None]:
    """(champion version, its accuracy on `data`'s validation rows), or (None, None)."""
    from clothing_assets.ml.engine import accuracy_of_model_file

    labels = data.val_class_names()
    champion = registry.champion()
    if champion is None or not labels:
        return None, None
    images = data.images[data.val]
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
    from clothing_assets.ml.data import TrainingDataError, labelled_split, training_rows
    from clothing_assets.reports import challenger_inputs_metadata, training_metadata

    scheduled = context.run.tags.get(FROM_AUTOMATION_TAG) == "true"  # the scheduled retrain
    try:
        settings = config.settings(scheduled=scheduled)
    except WarmStartRefused as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    catalog = warehouse.read_catalog("clothing_train")
    try:
        rows = training_rows(catalog, settings.downsample_to, env_var=train_stage.env_var)
    except TrainingDataError as exc:
        raise dg.Failure(str(exc)) from exc
    decoded, cache, decode_seconds = _decode(
        context, config, warehouse, train_stage, model_store, rows
    )
    _record_decode_errors(context, warehouse, rows, decoded)
    rows = rows.iloc[decoded.kept].reset_index(drop=True)
    rows, images, reviewed = _reviewed(context, warehouse, rows, decoded.images,
                                       exclude_leaked=config.exclude_leaked)  # fmt: skip
    if rows["CLASS"].nunique() < 2:
        raise dg.Failure("fewer than two classes have decodable images; see clothing_train.ERROR")
    data = labelled_split(rows, images, val_fraction=settings.val_fraction)
    start = _start(context, config, model_registry, data.classes, scheduled=scheduled)
    settings = config.budgeted(settings, start)
    result = _fit(context, settings, data, model_store, rows, start)
    compared_with, champion_accuracy = _compare_with_champion(context, model_registry, data)
    version = _register(
        context, model_registry, settings, result, data, rows, compared_with, champion_accuracy
    )
    metadata = training_metadata(settings, result, data, version, model_store.plots_dir)
    metadata.update(challenger_inputs_metadata(
        decode_seconds=decode_seconds, decode_cache=cache,
        rows_with_error=int(catalog["ERROR"].notna().sum()) + len(decoded.errors),
        compared_with=compared_with, champion_accuracy=champion_accuracy,
    ))  # fmt: skip
    metadata.update(start.metadata(config.resolved_init(scheduled=scheduled)))
    metadata.update(reviewed)
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))


def _start(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    registry: ModelRegistry,
    classes: list[str],
    *,
    scheduled: bool,
) -> Start:
    """Where this run starts (`warm_start`); a Failure that names what to change when the
    champion cannot be fine-tuned for these classes. A scheduled retrain, which no one
    configured, starts from `weights` instead, with a note."""
    from clothing_assets.defs.assets.warm_start import champion_start

    init = config.resolved_init(scheduled=scheduled)
    if init != "champion":
        return Start(init)
    try:
        start = champion_start(
            registry, classes, config.architecture, config.weights, strict=not scheduled
        )
    except WarmStartRefused as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if start.note:
        context.log.warning(start.note)
    else:
        context.log.info(f"fine-tuning from champion {start.version}'s weights")
    return start


def _reviewed(
    context: dg.AssetExecutionContext,
    warehouse: Warehouse,
    rows: pd.DataFrame,
    images,
    *,
    exclude_leaked: bool,
) -> tuple[pd.DataFrame, object, dict[str, dg.MetadataValue]]:
    """`rows` (with their decoded `images`) labelled as people decided in clothing_label_fixes,
    and with `exclude_leaked` without the train images clothing_near_duplicates pairs with a
    test image; the metadata that counts both. Applied after decoding, so the decode cache of
    the catalog rows serves whatever the review decided."""
    from clothing_assets.ml.duplicates import leaked_train_paths
    from clothing_assets.ml.label_issues import effective_labels

    labels = effective_labels(rows, warehouse.latest_label_decisions())
    fixed = int((labels != rows["CLASS"]).sum())
    rows = rows.assign(CLASS=labels)
    leaked = (
        leaked_train_paths(warehouse.read_results("clothing_near_duplicates"))
        if exclude_leaked
        else set()
    )
    keep = ~rows["RELATIVE_PATH"].isin(leaked).to_numpy()
    if fixed or not keep.all():
        context.log.info(
            f"{fixed} labels as fixed by a person; {int((~keep).sum())} train images left out "
            "as near-duplicates of test images"
        )
    metadata = {
        "labels_fixed": dg.MetadataValue.int(fixed),
        "exclude_leaked": dg.MetadataValue.bool(exclude_leaked),
        "leaked_excluded": dg.MetadataValue.int(int((~keep).sum())),
    }
    import torch

    return rows[keep].reset_index(drop=True), images[torch.from_numpy(keep)], metadata


def _decode(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    warehouse: Warehouse,
    train_stage: StageResource,
    model_store: ModelStoreResource,
    rows: pd.DataFrame,
) -> tuple["DecodedImages", str, float]:
    """(decoded images, cache outcome, seconds) of `rows`, with a terminal progress bar."""
    from clothing_assets.ml.data import decode_training_images
    from clothing_assets.ml.images import cache_size

    side, started = cache_size(config.image_size), time.perf_counter()
    with tqdm(total=len(rows), desc="decode", unit="img", disable=not sys.stderr.isatty()) as bar:
        decoded, cache = decode_training_images(
            rows, lambda batch: warehouse.file_urls(train_stage.name, batch), side,
            cache_path=model_store.cache_root / DECODE_CACHE_FILE if config.decode_cache else None,
            on_image=lambda: bar.update(1), on_warning=context.log.warning,
        )  # fmt: skip
    decode_seconds = time.perf_counter() - started
    context.log.info(f"{len(decoded.kept)} images ready in {decode_seconds:.1f}s (cache {cache})")
    return decoded, cache, decode_seconds


def _register(
    context: dg.AssetExecutionContext,
    registry: ModelRegistry,
    settings: TrainSettings,
    result: "FitResult",
    data: "LabelledImages",
    rows: pd.DataFrame,
    compared_with: str | None,
    champion_accuracy: float | None,
) -> str:
    """Store and register the trained weights as a challenger; its version."""
    from clothing_assets.ml.data import catalog_fingerprint
    from clothing_assets.ml.model_file import ModelFile

    val_accuracy = result.best_val_accuracy
    version = registry.register(
        ModelFile.of_training(
            result.state_dict, data.classes, settings, val_accuracy=val_accuracy
        ).to_bytes(),
        {
            "created_at": pd.Timestamp.now(tz="UTC").to_pydatetime(),
            "architecture": settings.architecture, "image_size": settings.image_size,
            "classes": data.classes, "val_accuracy": val_accuracy, "val_rows": len(data.val),
            "train_rows": len(data.train), "catalog_fingerprint": catalog_fingerprint(rows),
            "compared_with": compared_with, "champion_val_accuracy": champion_accuracy,
        },
        run_id=context.run.run_id,
    )  # fmt: skip
    context.log.info(f"challenger {version} stored at {registry.store.uri(version)}")
    return version


def _fit(context, settings, data: "LabelledImages", model_store, rows, start: Start) -> "FitResult":
    """Run `fit` on `data` from `start` with per-epoch logs and a terminal progress bar."""
    from clothing_assets.ml.data import job_fingerprint
    from clothing_assets.ml.durable import checkpoint_file
    from clothing_assets.ml.train import fit

    images, labels, tr, va = data.images, data.labels, data.train, data.val
    context.log.info(
        f"{len(tr)} train / {len(va)} validation images, {len(data.classes)} classes, "
        f"{settings.architecture} at {settings.image_size}px, at most {settings.n_epochs} epochs"
    )
    planned, per_epoch = {"epochs": settings.n_epochs}, max(1, len(tr) // settings.batch_size)

    def on_plan(plan) -> None:  # before the first epoch, and after it if it re-planned
        planned["epochs"] = plan.epochs
        bar.total = plan.epochs * per_epoch
        bar.refresh()
        context.log.info(plan.describe())

    def on_epoch(stats, eta: float) -> None:
        val = f"{stats.val_acc:.3f}" if stats.val_acc is not None else "n/a"
        context.log.info(
            f"epoch {stats.epoch}/{planned['epochs']}: loss {stats.train_loss:.4f}, "
            f"train acc {stats.train_acc:.3f}, val acc {val}, "
            f"{stats.images_per_second:.1f} img/s, ETA {eta:.0f}s"
        )

    fingerprint, steps = job_fingerprint(settings, rows), settings.n_epochs * per_epoch
    if start.version:  # a checkpoint resumes only a run from the same champion's weights
        fingerprint = hashlib.sha256(f"{fingerprint}|{start.version}".encode()).hexdigest()
    # one checkpoint per job, under the cache folder's training lock (taken by fit): a
    # concurrent run's checkpoint is neither resumed nor deleted
    checkpoint = checkpoint_file(model_store.cache_root, fingerprint)
    with tqdm(total=steps, desc="train", unit="step", disable=not sys.stderr.isatty()) as bar:
        result = fit(
            images[tr], labels[tr], images[va], labels[va], data.classes, settings,
            checkpoint_path=checkpoint, fingerprint=fingerprint, on_warning=context.log.warning,
            on_epoch=on_epoch, progress=lambda _n: bar.update(1), on_plan=on_plan,
            lock_timeout_s=setting("CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS"),
            init_state=start.state_dict,
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
    force: bool = Field(
        default=False,
        description="Promote `version` even though the gate rejected it or its validation "
        "accuracy is below CLOTHING_MIN_VAL_ACCURACY; the override is recorded in the registry.",
    )


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
            model_registry.promote(config.version, config.reason, force=config.force, run_id=run_id)
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
