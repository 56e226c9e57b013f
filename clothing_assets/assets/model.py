"""The trained model: a torchvision classifier fitted on the train catalog."""

import hashlib
import json
import sys
import time
from dataclasses import asdict, fields

import dagster as dg
import pandas as pd
import torch
from pydantic import Field
from tqdm import tqdm

from clothing_assets.assets.catalog import clothing_train
from clothing_assets.ml.data import (
    DecodedImages,
    decode_cache_key,
    load_decode_cache,
    load_images_minted,
    save_decode_cache,
    stable_hash,
    stratified_split,
)
from clothing_assets.ml.durable import checkpoint_file
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.train import TrainSettings, fit, model_payload, save_atomic
from clothing_assets.plots import (
    confusion_matrix,
    confusion_matrix_png,
    per_class_scores,
    png_markdown,
    training_curves_png,
)
from clothing_assets.resources.model_store import ModelStoreResource, file_version
from clothing_assets.resources.warehouse import Warehouse
from clothing_assets.stage import StageResource, class_of

_DEFAULTS = TrainSettings()
DECODE_CACHE_FILE = "decoded_train.pt"
CACHE_KEY_COLUMNS = ("RELATIVE_PATH", "SIZE", "LAST_MODIFIED")


class TrainConfig(dg.Config):
    """Hyperparameters of `trained_model`. The defaults train a resnet18 at 128 px that fits
    the main job's 15-minute CPU budget; `configs/resnet50_gpu.yaml` is the 25-epoch ResNet50
    recipe for GPU machines."""

    architecture: str = Field(
        default=_DEFAULTS.architecture, description="Any torchvision classification model name."
    )
    image_size: int = Field(default=_DEFAULTS.image_size, description="Training crop side (px).")
    n_epochs: int = Field(default=_DEFAULTS.n_epochs)
    batch_size: int = Field(default=_DEFAULTS.batch_size)
    base_lr: float = Field(default=_DEFAULTS.base_lr, description="AdamW peak learning rate.")
    weight_decay: float = Field(default=_DEFAULTS.weight_decay)
    label_smoothing: float = Field(default=_DEFAULTS.label_smoothing)
    warmup_epochs: float = Field(default=_DEFAULTS.warmup_epochs)
    downsample_to: float = Field(
        default=_DEFAULTS.downsample_to, description="Fraction of the training data used."
    )
    val_fraction: float = Field(
        default=_DEFAULTS.val_fraction, description="Stratified validation split of the catalog."
    )
    checkpoint_every: int = Field(
        default=_DEFAULTS.checkpoint_every, description="Checkpoint every N iterations (0: off)."
    )
    seed: int = Field(default=_DEFAULTS.seed)
    weights: str = Field(
        default=_DEFAULTS.weights,
        description="'none' (random init) or 'imagenet' (downloads torchvision's weights).",
    )
    device: str = Field(default=_DEFAULTS.device, description="'auto', 'cpu' or 'cuda'.")
    bf16: str = Field(default=_DEFAULTS.bf16, description="'auto', 'on' or 'off'.")
    compile: bool = Field(
        default=_DEFAULTS.compile,
        description="torch.compile the training forward pass (worth it on GPUs; minutes of "
        "compilation first).",
    )
    ema_decay: float = Field(
        default=_DEFAULTS.ema_decay,
        description="Keep and validate an exponential moving average of the weights with this "
        "per-step decay (e.g. 0.998); 0: off.",
    )
    mixup_alpha: float = Field(
        default=_DEFAULTS.mixup_alpha, description="MixUp Beta(a, a); 0: off."
    )
    cutmix_alpha: float = Field(
        default=_DEFAULTS.cutmix_alpha, description="CutMix Beta(a, a); 0: off."
    )
    decode_cache: bool = Field(
        default=True,
        description="Keep the decoded uint8 images in models/cache/, tied to the catalog rows "
        "(path, size, last-modified), so a re-run with the same files reads no stage file.",
    )

    def settings(self) -> TrainSettings:
        return TrainSettings(**{f.name: getattr(self, f.name) for f in fields(TrainSettings)})


def downsample(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Keep ceil(fraction * n) images of each class, chosen by a stable hash of the path."""
    if not 0.0 < fraction <= 1.0:
        raise dg.Failure(f"downsample_to must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return frame.sort_values("RELATIVE_PATH").reset_index(drop=True)
    keep = []
    for _, group in frame.groupby("CLASS"):
        ordered = group.assign(_h=group["RELATIVE_PATH"].map(stable_hash)).sort_values("_h")
        keep.append(ordered.head(max(1, int(-(-len(group) * fraction // 1)))))
    return pd.concat(keep).drop(columns="_h").sort_values("RELATIVE_PATH").reset_index(drop=True)


def fingerprint(settings: TrainSettings, frame: pd.DataFrame) -> str:
    """Identifies a training job: the config and the exact files; a checkpoint resumes only
    a job with the same fingerprint."""
    files = frame[["RELATIVE_PATH", "SIZE"]].astype(str).agg("|".join, axis=1).tolist()
    blob = json.dumps({"settings": asdict(settings), "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


@dg.asset(group_name="model", deps=[clothing_train], kinds={"pytorch"})
def trained_model(
    context: dg.AssetExecutionContext,
    config: TrainConfig,
    warehouse: Warehouse,
    train_stage: StageResource,
    model_store: ModelStoreResource,
) -> dg.MaterializeResult:
    """A torchvision classifier trained on clothing_train, written to models/model_trained.pt."""
    settings = config.settings()
    catalog = warehouse.read_catalog("clothing_train")
    usable = catalog[catalog["ERROR"].isna()].copy()
    usable["CLASS"] = usable["RELATIVE_PATH"].map(class_of)
    usable = downsample(usable.dropna(subset=["CLASS"]), settings.downsample_to)
    if usable["CLASS"].nunique() < 2:
        raise dg.Failure(
            f"clothing_train has {len(usable)} usable images in "
            f"{usable['CLASS'].nunique()} class folders; training needs at least two classes. "
            f"Check the train stage ({train_stage.env_var}) and materialize clothing_train."
        )

    # Read and decode every image once; epochs then cost compute, not I/O.
    side = cache_size(settings.image_size)
    paths = usable["RELATIVE_PATH"].tolist()
    cache_path = model_store.root / "cache" / DECODE_CACHE_FILE
    started = time.perf_counter()
    cached = None
    if config.decode_cache:
        key = decode_cache_key(usable[list(CACHE_KEY_COLUMNS)].itertuples(index=False), side)
        cached = load_decode_cache(cache_path, key, len(usable))
    if cached is not None:
        decoded = DecodedImages(images=cached, kept=list(range(len(usable))))
        context.log.info(f"{len(paths)} training images at {side}x{side} from {cache_path}")
    else:
        context.log.info(f"decoding {len(paths)} training images at {side}x{side}")
        with tqdm(
            total=len(paths), desc="decode", unit="img", disable=not sys.stderr.isatty()
        ) as bar:
            # URLs minted per batch just before reading (presigned URLs expire); a refused one
            # is retried once with a fresh URL
            decoded = load_images_minted(
                paths,
                lambda batch: warehouse.file_urls(train_stage.name, batch),
                side,
                on_image=lambda: bar.update(1),
            )
        if config.decode_cache:
            # keyed by the rows that decoded: the next run's usable rows, once the failures
            # are recorded in clothing_train.ERROR
            kept_rows = usable.iloc[decoded.kept][list(CACHE_KEY_COLUMNS)]
            save_decode_cache(
                cache_path, decode_cache_key(kept_rows.itertuples(index=False), side),
                decoded.images, on_warning=context.log.warning,
            )  # fmt: skip
    decode_seconds = time.perf_counter() - started
    context.log.info(
        f"{len(decoded.kept)} images ready in {decode_seconds:.1f}s "
        f"({'from the decode cache' if cached is not None else 'read and decoded'})"
    )
    if decoded.errors:
        bad = usable.iloc[list(decoded.errors)]
        recorded = warehouse.record_errors(
            "clothing_train",
            pd.DataFrame(
                {"RELATIVE_PATH": bad["RELATIVE_PATH"], "ERROR": list(decoded.errors.values())}
            ),
        )
        context.log.warning(
            f"{recorded} training files could not be used; see clothing_train.ERROR"
        )
    # every clothing_train row training could not use: refused or rootless at sync, or undecodable
    unusable_files = int(catalog["ERROR"].notna().sum()) + len(decoded.errors)
    usable = usable.iloc[decoded.kept].reset_index(drop=True)
    classes = sorted(usable["CLASS"].unique())
    if len(classes) < 2:
        raise dg.Failure("fewer than two classes have decodable images; see clothing_train.ERROR")
    labels = torch.tensor([classes.index(c) for c in usable["CLASS"]], dtype=torch.long)
    train_idx, val_idx = stratified_split(
        usable["RELATIVE_PATH"].tolist(), labels.tolist(), val_fraction=settings.val_fraction
    )
    context.log.info(
        f"{len(train_idx)} train / {len(val_idx)} validation images, {len(classes)} classes, "
        f"{settings.architecture} at {settings.image_size}px, {settings.n_epochs} epochs"
    )

    def on_epoch(stats, eta: float) -> None:
        val = f"{stats.val_acc:.3f}" if stats.val_acc is not None else "n/a"
        context.log.info(
            f"epoch {stats.epoch}/{settings.n_epochs}: loss {stats.train_loss:.4f}, "
            f"train acc {stats.train_acc:.3f}, val acc {val}, "
            f"{stats.images_per_second:.1f} img/s, ETA {eta:.0f}s"
        )

    tr, va = torch.tensor(train_idx, dtype=torch.long), torch.tensor(val_idx, dtype=torch.long)
    steps = settings.n_epochs * max(1, len(train_idx) // settings.batch_size)
    job = fingerprint(settings, usable)
    # one checkpoint per job: a concurrent run's checkpoint is neither resumed nor deleted
    checkpoint_path = checkpoint_file(model_store.checkpoint_path.parent, job)
    with tqdm(total=steps, desc="train", unit="step", disable=not sys.stderr.isatty()) as bar:
        result = fit(
            decoded.images[tr], labels[tr], decoded.images[va], labels[va], classes, settings,
            checkpoint_path=checkpoint_path, fingerprint=job, on_warning=context.log.warning,
            on_epoch=on_epoch,
            progress=lambda _n: bar.update(1),
        )  # fmt: skip
    if result.resumed_from_step:
        context.log.info(f"resumed from the checkpoint at step {result.resumed_from_step}")

    best = next((h for h in result.history if h.epoch == result.best_epoch), None)
    payload = model_payload(
        result.state_dict, classes, settings, val_accuracy=best.val_acc if best else None
    )
    data = save_atomic(payload, model_store.model_path)
    version = file_version(data)
    checkpoint_path.unlink(missing_ok=True)
    context.log.info(f"model {version} written to {model_store.model_path}")
    metadata = _metadata(settings, result, classes, labels[va], version, model_store, len(tr))
    metadata["decode_seconds"] = dg.MetadataValue.float(round(decode_seconds, 1))
    metadata["decode_cache"] = dg.MetadataValue.text(
        "off" if not config.decode_cache else "hit" if cached is not None else "miss"
    )
    metadata["rows_with_error"] = dg.MetadataValue.int(unusable_files)
    return dg.MaterializeResult(
        metadata=metadata,
        data_version=dg.DataVersion(version),
    )


def _metadata(settings, result, classes, val_labels, version, model_store, n_train) -> dict:
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
        "path": dg.MetadataValue.path(str(model_store.model_path.resolve())),
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
