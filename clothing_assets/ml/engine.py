"""One epoch of training and one pass of evaluation, in the style of torchvision's
classification reference (`references/classification/train.py`): plain functions over a
model, its data, an optimizer and one `Recipe`. `train.fit` drives them across epochs; the
budget's throughput probe and the benches call them directly."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from clothing_assets.ml.budget import EpochPlan
from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.devices import amp_dtype_for, autocast
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import trains_faster_in_fp32
from clothing_assets.ml.presets import ClassificationPresetEval, ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings

OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class Recipe:
    """What every training step of a run shares: how batches are drawn and augmented, the
    device and precision, the loss, and the mixing of images (MixUp/CutMix alphas, 0 for
    none). `of` builds it from a run's `TrainSettings`."""

    preset: ClassificationPresetTrain
    criterion: nn.Module
    batch_size: int
    seed: int
    device: torch.device
    amp_dtype: torch.dtype | None = None
    num_classes: int = 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self) -> None:
        if self.mixes and self.num_classes < 1:
            raise ValueError("mixup/cutmix need num_classes")

    @classmethod
    def of(
        cls,
        settings: TrainSettings,
        preset: ClassificationPresetTrain,
        *,
        num_classes: int,
        device: torch.device,
        amp_dtype: torch.dtype | None,
    ) -> Recipe:
        """The recipe of `settings` for `num_classes` classes on `device`."""
        return cls(
            preset=preset, criterion=nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing),
            batch_size=settings.batch_size, seed=settings.seed, device=device,
            amp_dtype=amp_dtype, num_classes=num_classes, mixup_alpha=settings.mixup_alpha,
            cutmix_alpha=settings.cutmix_alpha,
        )  # fmt: skip

    @property
    def mixes(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def training_amp_dtype(device: torch.device, settings: TrainSettings) -> torch.dtype | None:
    """`amp_dtype_for` for training `settings.architecture`: under `bf16: auto`, fp32 on the CPU
    kinds where that architecture's step measured faster in fp32 (`models.FP32_TRAINING_KINDS`).
    Validation follows training; scoring keeps `amp_dtype_for`."""
    if (
        settings.bf16 == "auto"
        and device.type == "cpu"
        and trains_faster_in_fp32(settings.architecture, cpu_kind())
    ):
        return None
    return amp_dtype_for(device, settings.bf16)


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, kind: str = "adamw"
) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD, with their fused kernels (CPU and CUDA): one pass over all
    weights per step instead of one per tensor (AdamW: 3.8 instead of 34.1 ms per resnet18
    step here, bench/step_parts.py). Frozen parameters (no `requires_grad`) are left out."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if kind == "adamw":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "sgd":
        return torch.optim.SGD(
            trainable, lr=lr, momentum=0.9, nesterov=True,
            weight_decay=weight_decay, fused=True,
        )  # fmt: skip
    raise ValueError(f"optimizer {kind!r} is not one of {', '.join(OPTIMIZERS)}")


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then cosine decay to zero over the remaining steps."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def cosine_from(start_step: int, start_factor: float, total_steps: int) -> Callable[[int], float]:
    """LR multiplier from `start_step` on: cosine decay from `start_factor` to zero at
    `total_steps` (the steps before `start_step` have run: they keep `start_factor`)."""

    def factor(step: int) -> float:
        progress = max(0, step - start_step) / max(1, total_steps - start_step)
        return start_factor * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def planned_schedule(
    plan: EpochPlan, settings: TrainSettings, steps_per_epoch: int
) -> Callable[[int], float]:
    """The warmup-cosine LR multiplier sized to the plan's epochs; from the step where the
    half-way check re-made the plan, a cosine from the multiplier reached there."""
    total_steps = max(1, steps_per_epoch * plan.epochs)
    if plan.decay_from_step is not None:
        return cosine_from(plan.decay_from_step, plan.decay_from_factor, total_steps)
    warmup = min(total_steps // 2, int(settings.warmup_epochs * steps_per_epoch))
    return warmup_cosine(total_steps, warmup)


def make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers; None when `decay` is 0."""
    if decay <= 0:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )


def epoch_batches(n: int, batch_size: int, *, seed: int, epoch: int) -> list[torch.Tensor]:
    """The index batches of one epoch: a permutation fixed by (seed, epoch), full batches only
    (a ragged last batch would add noise and can break BatchNorm), or one batch if n is small."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    if n < batch_size:
        return [perm] if n >= 2 else []
    return list(perm[: (n // batch_size) * batch_size].split(batch_size))


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    mixup_alpha: float,
    cutmix_alpha: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (one of the enabled ones, at random) of a batch with its own roll by one,
    as in torchvision's reference; returns the mixed batch and soft targets.

    All randomness comes from `generator`, so a resumed run mixes exactly as the uninterrupted
    one. With both alphas 0 the batch is returned as is, with one-hot targets.
    """
    targets = nn.functional.one_hot(y, num_classes).to(torch.float32)
    modes = [m for m, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not modes or len(x) < 2:
        return x, targets
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
    mode = modes[int(rng.integers(len(modes)))]
    alpha = mixup_alpha if mode == "mixup" else cutmix_alpha
    lam = float(rng.beta(alpha, alpha))
    other_x, other_t = x.roll(1, 0), targets.roll(1, 0)
    if mode == "mixup":
        x = x * lam + other_x * (1.0 - lam)
    else:
        height, width = x.shape[-2:]
        cut = math.sqrt(1.0 - lam)
        cy, cx = int(rng.integers(height)), int(rng.integers(width))
        y0, y1 = max(cy - int(cut * height / 2), 0), min(cy + int(cut * height / 2), height)
        x0, x1 = max(cx - int(cut * width / 2), 0), min(cx + int(cut * width / 2), width)
        x = x.clone()
        x[..., y0:y1, x0:x1] = other_x[..., y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (height * width)
    return x, targets * lam + other_t * (1.0 - lam)


def training_batches(
    images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, *, epoch: int, start: int = 0
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The epoch's batches from batch `start` on, augmented (and mixed) on the recipe's device:
    (batch index, x, labels, targets). Each batch draws from its own generator, so resuming
    mid-epoch reproduces the uninterrupted run. `images` may live on the device (a GPU-resident
    dataset): batches are cut and augmented where they are."""
    batches = epoch_batches(len(images), recipe.batch_size, seed=recipe.seed, epoch=epoch)
    device = recipe.device
    for b, idx in enumerate(batches):
        if b < start:
            continue
        gen = torch.Generator().manual_seed(recipe.seed * 1_000_003 + epoch * 10_007 + b)
        idx = idx.to(images.device)
        x = recipe.preset(images[idx], gen).to(device, non_blocking=True)
        y = labels[idx].to(device, non_blocking=True)
        target = y
        if recipe.mixes:
            x, target = mix_batch(
                x, y, recipe.num_classes, mixup_alpha=recipe.mixup_alpha,
                cutmix_alpha=recipe.cutmix_alpha, generator=gen,
            )  # fmt: skip
        yield b, x, y, target


def train_one_epoch(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    recipe: Recipe,
    *,
    epoch: int,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    start_batch: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> tuple[float, float, int]:
    """Train on `data` (images, labels) for epoch `epoch` from batch `start_batch`; return
    (mean loss, accuracy, images). The scheduler steps and `ema` is updated after every
    optimizer step, then `on_step(batch_index, images_in_batch)` runs. `forward` is the
    (possibly `torch.compile`d) model call. Losses and hits are summed on the device and read
    once at the end: no per-step sync."""
    forward = model if forward is None else forward
    model.train()
    loss_sum = torch.zeros((), device=recipe.device)
    hits = torch.zeros((), device=recipe.device, dtype=torch.long)
    seen = 0
    for b, x, y, target in training_batches(*data, recipe, epoch=epoch, start=start_batch):
        with autocast(recipe.device, recipe.amp_dtype):
            logits = forward(x)
            loss = recipe.criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(y)
        hits += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if on_step is not None:
            on_step(b, len(y))
    if seen == 0:
        return float("nan"), float("nan"), 0
    return float(loss_sum) / seen, float(hits) / seen, seen


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    criterion: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    preset: ClassificationPresetEval,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> tuple[float, float, torch.Tensor]:
    """Return (mean loss, accuracy, predicted labels) over `images`."""
    model.eval()
    if len(images) == 0:
        return float("nan"), float("nan"), torch.empty(0, dtype=torch.long)
    loss_sum = torch.zeros((), device=device)
    preds = []
    for start in range(0, len(images), batch_size):
        x = preset(images[start : start + batch_size]).to(device)
        y = labels[start : start + batch_size].to(device)
        with autocast(device, amp_dtype):
            logits = model(x)
        loss_sum += criterion(logits.float(), y) * len(y)
        preds.append(logits.argmax(1).cpu())
    predicted = torch.cat(preds)
    accuracy = float((predicted == labels.cpu()).float().mean())
    return float(loss_sum) / len(images), accuracy, predicted


@torch.inference_mode()
def accuracy_of_model_file(
    data: bytes, images: torch.Tensor, labels: list[str], *, batch_size: int = 128
) -> float:
    """Top-1 accuracy of the model in `data` on uint8 `images` (N x 3 x S x S, as decoded for
    training) against class names, evaluated as `fit` evaluates its validation split; images
    stored at another size than the model's are resized to it first."""
    model_file = ModelFile.load(data)
    model = model_file.build()
    side = model_file.cache_size
    if images.shape[-1] != side or images.shape[-2] != side:
        images = TF.resize(images, [side, side], antialias=True)
    preset = model_file.eval_preset()
    device = torch.device("cpu")
    amp_dtype = amp_dtype_for(device)
    predicted: list[int] = []
    for start in range(0, len(images), batch_size):
        with autocast(device, amp_dtype):
            logits = model(preset(images[start : start + batch_size]))
        predicted += logits.argmax(1).tolist()
    names = [model_file.classes[i] for i in predicted]
    return sum(n == t for n, t in zip(names, labels, strict=True)) / max(1, len(labels))
