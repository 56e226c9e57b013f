"""Training in the style of torchvision's classification reference: plain functions that the
`trained_model` asset wires together and logs."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from clothing_assets.ml.budget import (
    EpochPlan,
    midway_epoch,
    over_budget,
    replan_after_epoch,
    replan_epoch,
    replan_midway,
)
from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.devices import amp_dtype_for, select_device
from clothing_assets.ml.durable import training_lock
from clothing_assets.ml.model_file import ModelFile, load_checkpoint, save_checkpoint
from clothing_assets.ml.models import build_model, normalization, trains_faster_in_fp32
from clothing_assets.ml.presets import ClassificationPresetEval, ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass
class EpochStats:
    """One epoch's training and validation figures."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    images: int
    seconds: float
    # False for an epoch resumed part-way: its seconds are not an epoch's time
    whole: bool = True

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


@dataclass
class FitResult:
    """What `fit` hands back: the kept weights and the history behind them."""

    state_dict: dict[str, torch.Tensor]
    history: list[EpochStats]
    best_epoch: int
    device: str
    amp_dtype: str
    train_seconds: float
    steps: int
    resumed_from_step: int = 0
    val_predictions: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    plan: EpochPlan | None = None
    cpu_kind: str = ""
    crop_scale_min: float = 0.0  # the smallest training crop the run used

    @property
    def best_val_accuracy(self) -> float | None:
        """The kept epoch's validation accuracy; None without validation images."""
        best = next((h for h in self.history if h.epoch == self.best_epoch), None)
        return None if best is None else best.val_acc


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


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, kind: str = "adamw"
) -> torch.optim.Optimizer:
    """AdamW or Nesterov SGD, with their fused kernels (CPU and CUDA): one pass over all
    weights per step instead of one per tensor (AdamW: 3.8 instead of 34.1 ms per resnet18
    step here, bench/step_parts.py)."""
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True,
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


def _training_batch(
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    preset: ClassificationPresetTrain,
    device: torch.device,
    seed: int,
    epoch: int,
    b: int,
    mix: tuple[int, float, float] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batch `b` of the epoch augmented (and mixed, with `mix`), on `device`: (x, labels,
    targets). Each step draws from its own generator, so resuming mid-epoch reproduces the
    uninterrupted run."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch * 10_007 + b)
    idx = idx.to(images.device)
    x = preset(images[idx], gen).to(device, non_blocking=True)
    y = labels[idx].to(device, non_blocking=True)
    if mix is None:
        return x, y, y
    num_classes, mixup_alpha, cutmix_alpha = mix
    x, target = mix_batch(
        x, y, num_classes, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, generator=gen
    )
    return x, y, target


# Over 60 lines only through its keyword-only signature (22 lines: the recipe's options, which
# fit, the budget's throughput probe and the bench pass by name); the body is ~30 lines.
def train_one_epoch(
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    preset: ClassificationPresetTrain,
    batch_size: int,
    epoch: int,
    seed: int,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    start_batch: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ema: torch.optim.swa_utils.AveragedModel | None = None,
    num_classes: int | None = None,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
) -> tuple[float, float, int]:
    """Train for one epoch from batch `start_batch`; return (mean loss, accuracy, images).

    `images` may live on the device (a GPU-resident dataset): batches are cut and augmented
    where they are. Losses and hits are summed on the device and read once at the end: no
    per-step sync. `forward` is the (possibly `torch.compile`d) model call; `ema`, when
    given, is updated after every optimizer step. `on_step(batch_index, images_in_batch)`
    runs after each optimizer step.
    """
    forward = model if forward is None else forward
    mix = (num_classes, mixup_alpha, cutmix_alpha) if mixup_alpha > 0 or cutmix_alpha > 0 else None
    if mix is not None and num_classes is None:
        raise ValueError("mixup/cutmix need num_classes")
    model.train()
    loss_sum = torch.zeros((), device=device)
    hits = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    batches = epoch_batches(len(images), batch_size, seed=seed, epoch=epoch)
    for b, idx in enumerate(batches):
        if b < start_batch:
            continue
        x, y, target = _training_batch(images, labels, idx, preset, device, seed, epoch, b, mix)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = forward(x)
            loss = criterion(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(idx)
        hits += (logits.detach().argmax(1) == y).sum()
        seen += len(idx)
        if on_step is not None:
            on_step(b, len(idx))
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
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = model(x)
        loss_sum += criterion(logits.float(), y) * len(y)
        preds.append(logits.argmax(1).cpu())
    predicted = torch.cat(preds)
    accuracy = float((predicted == labels.cpu()).float().mean())
    return float(loss_sum) / len(images), accuracy, predicted


def fit(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    classes: list[str],
    settings: TrainSettings,
    *,
    checkpoint_path: Path | None = None,
    fingerprint: str = "",
    on_epoch: Callable[[EpochStats, float], None] | None = None,
    progress: Callable[[int], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
    on_plan: Callable[[EpochPlan], None] | None = None,
) -> FitResult:
    """Train a fresh (or resumed) model and return the best validation epoch's weights.

    With `max_train_minutes`, a few steps are timed first (on a copy: the run is unchanged)
    and the epochs that fit, at most `n_epochs`, are planned; the run re-plans once from an
    early epoch's time (`budget.replan_after_epoch`: the second, or the first of a plan under
    `budget.REPLAN_MIN_EPOCHS`), if that epoch runs whole in this process, and checks the plan
    once more half way against the median epoch (`budget.replan_midway`). The
    learning-rate schedule is sized to the plan, the checkpoint keeps it and a resumed run
    reuses it. `on_plan` gets the plan before the first epoch, and again if it is re-made.

    A checkpoint is written every `checkpoint_every` steps and at every epoch end; if
    `checkpoint_path` holds one with the same `fingerprint`, training resumes from it and ends
    after the same number of steps as an uninterrupted run. With a checkpoint, training holds
    its folder's `training_lock`; a checkpoint that cannot be written (a full disk) is reported
    to `on_warning` and training goes on.
    """
    lock = training_lock(checkpoint_path.parent) if checkpoint_path else contextlib.nullcontext()
    with lock:
        return _fit(
            train_images, train_labels, val_images, val_labels, classes, settings,
            checkpoint_path=checkpoint_path, fingerprint=fingerprint, on_epoch=on_epoch,
            progress=progress, on_warning=on_warning or log.warning, on_plan=on_plan,
        )  # fmt: skip


def _plan_and_schedule(
    ckpt: dict[str, Any] | None,
    settings: TrainSettings,
    model: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    *,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    on_plan: Callable[[EpochPlan], None] | None,
) -> tuple[EpochPlan, torch.optim.lr_scheduler.LambdaLR]:
    """The run's epoch plan (the checkpoint's verbatim, else measured against the budget on a
    copy of `model`) and the warmup-cosine schedule sized to the planned epochs."""
    from clothing_assets.ml.throughput import measure_throughput, plan_training

    steps_per_epoch = len(epoch_batches(len(train[0]), settings.batch_size, seed=0, epoch=0))
    plan = plan_training(
        ckpt.get("plan") if ckpt is not None else None, settings,
        steps_per_epoch=steps_per_epoch, n_val=len(val[0]),
        measure=lambda: measure_throughput(
            model, criterion, train, val, settings=settings, device=device, amp_dtype=amp_dtype
        ),
    )  # fmt: skip
    log.info(plan.describe())
    if on_plan is not None:
        on_plan(plan)
    schedule = planned_schedule(plan, settings, steps_per_epoch)
    return plan, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


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


def _make_ema(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An exponential moving average of `model`'s weights and buffers; None when `decay` is 0."""
    if decay <= 0:
        return None
    if not 0.0 < decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
    return torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay), use_buffers=True
    )


class _Trainer:
    """One run of `fit`: the model, its optimizer and EMA, and where training stands (what a
    checkpoint saves and a resume restores)."""

    plan: EpochPlan
    scheduler: torch.optim.lr_scheduler.LambdaLR

    def __init__(
        self,
        settings: TrainSettings,
        classes: list[str],
        device: torch.device,
        *,
        checkpoint_path: Path | None,
        fingerprint: str,
        on_warning: Callable[[str], None],
    ) -> None:
        self.settings, self.classes, self.device = settings, classes, device
        self.amp_dtype = training_amp_dtype(device, settings)
        self.checkpoint_path, self.fingerprint, self.on_warning = (
            checkpoint_path, fingerprint, on_warning
        )  # fmt: skip
        torch.manual_seed(settings.seed)
        model = build_model(
            settings.architecture, len(classes), weights=settings.weights,
            image_size=settings.image_size,
        )  # fmt: skip
        self.model = model.to(device, memory_format=torch.channels_last)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
        self.optimizer = make_optimizer(
            self.model, settings.base_lr, settings.weight_decay, settings.optimizer
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = (
                True  # fixed shapes: let cuDNN pick its fastest kernels
            )
        self.mean, self.std = normalization(settings.architecture)
        self.eval_preset = ClassificationPresetEval(
            crop_size=settings.image_size, mean=self.mean, std=self.std
        )
        self.ema = _make_ema(self.model, settings.ema_decay)
        # the model that is validated and kept: the weight average when there is one
        self.kept_model = self.ema.module if self.ema is not None else self.model
        self.forward = torch.compile(self.model) if settings.compile else self.model
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.on_plan: Callable[[EpochPlan], None] | None = None
        self.saved_step = 0  # the step of the last checkpoint written
        self.history: list[EpochStats] = []
        self.best: dict[str, Any] = {"acc": -1.0, "epoch": -1, "state": None}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Take up the run where `ckpt` left it, RNG state included."""
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.start_epoch, self.start_batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        self.saved_step = self.step
        self.history = [EpochStats(**h) for h in ckpt["history"]]
        self.best = {
            "acc": ckpt["best_acc"],
            "epoch": ckpt["best_epoch"],
            "state": ckpt["best_model"],
        }

    def crop_for(self, plan: EpochPlan) -> None:
        """The training crops for `plan`, decided on the epochs its timed steps planned (which
        re-plans keep in `measured_epochs`), so a resumed run crops as the whole one did."""
        self.crop_scale_min = self.settings.crop_scale_for(plan.measured_epochs or plan.epochs)
        self.train_preset = ClassificationPresetTrain(
            crop_size=self.settings.image_size, scale=(self.crop_scale_min, 1.0),
            mean=self.mean, std=self.std,
        )  # fmt: skip

    def replan(
        self, plan: EpochPlan, n_train: int, on_plan: Callable[[EpochPlan], None] | None
    ) -> None:
        """Adopt a re-made plan: the LR schedule is re-sized to its epochs. Done at the end of
        the first epoch, within the warmup (one epoch by default), the LR so far is the same
        under either plan; at the end of the second, of 15 or more, nearly the same
        (`budget.REPLAN_EPOCH`); half way, the LR decays from where it is
        (`budget.replan_midway`). The epoch's checkpoint stores the new plan, which a resume
        keeps."""
        if plan == self.plan:
            return
        self.plan = plan
        steps = len(epoch_batches(n_train, self.settings.batch_size, seed=0, epoch=0))
        schedule = planned_schedule(plan, self.settings, steps)
        self.scheduler.lr_lambdas = [schedule] * len(self.optimizer.param_groups)
        log.info(plan.describe())
        if on_plan is not None:
            on_plan(plan)

    def checkpoint(self, epoch: int, batch: int) -> None:
        """Save the run to resume before batch `batch` of epoch `epoch`; a failure only warns."""
        if self.checkpoint_path is None:
            return
        try:
            save_checkpoint(self._checkpoint_dict(epoch, batch), self.checkpoint_path)
            self.saved_step = self.step
        except OSError as exc:  # a lost checkpoint costs a resume, not the run
            self.on_warning(f"checkpoint at step {self.step} not written, training goes on: {exc}")

    def _checkpoint_dict(self, epoch: int, batch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": epoch,
            "batch": batch,
            "step": self.step,
            "rng": {"torch": torch.get_rng_state()},
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "config": asdict(self.settings),
            "fingerprint": self.fingerprint,
            "plan": self.plan.as_dict(),
            "history": [asdict(h) for h in self.history],
            "best_acc": self.best["acc"],
            "best_epoch": self.best["epoch"],
            "best_model": self.best["state"],
        }

    def evaluate(self, val: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float, torch.Tensor]:
        """`evaluate` of the kept model on the validation split."""
        return evaluate(
            self.kept_model, self.criterion, *val, preset=self.eval_preset,
            batch_size=max(self.settings.batch_size, 128), device=self.device,
            amp_dtype=self.amp_dtype,
        )  # fmt: skip

    def run_epoch(
        self,
        epoch: int,
        train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor],
        progress: Callable[[int], None] | None,
    ) -> EpochStats:
        """Train epoch `epoch`, validate, keep the weights if best, checkpoint; its stats."""
        settings, t0 = self.settings, time.perf_counter()
        whole = self.start_batch == 0  # not resumed mid-epoch: its time is an epoch's time

        def on_step(b: int, n: int) -> None:
            self.step += 1
            if progress is not None:
                progress(n)
            if settings.checkpoint_every > 0 and self.step % settings.checkpoint_every == 0:
                self.checkpoint(epoch, b + 1)

        loss, acc, seen = train_one_epoch(
            self.model, self.criterion, self.optimizer, self.scheduler, *train,
            preset=self.train_preset, batch_size=settings.batch_size, epoch=epoch,
            seed=settings.seed, device=self.device, amp_dtype=self.amp_dtype,
            start_batch=self.start_batch, on_step=on_step, forward=self.forward, ema=self.ema,
            num_classes=len(self.classes), mixup_alpha=settings.mixup_alpha,
            cutmix_alpha=settings.cutmix_alpha,
        )  # fmt: skip
        self.start_batch = 0
        val_loss, val_acc, _ = self.evaluate(val)
        stats = EpochStats(
            epoch=epoch + 1,
            train_loss=loss,
            train_acc=acc,
            val_loss=None if math.isnan(val_loss) else val_loss,
            val_acc=None if math.isnan(val_acc) else val_acc,
            lr=self.optimizer.param_groups[0]["lr"],
            images=seen,
            seconds=time.perf_counter() - t0,
            whole=whole,
        )
        self.history.append(stats)
        self._keep_if_best(stats, epoch)
        if whole and epoch + 1 == replan_epoch(self.plan):  # re-plan before the checkpoint
            # below, so that it keeps the plan this run goes on with; a run resumed from the
            # end of epoch 1 re-plans after epoch 2 as an uninterrupted one would (a plan
            # re-made already stays: `replan_after_epoch` re-makes a plan once)
            remade = replan_after_epoch(
                self.plan, done=epoch + 1, epoch_seconds=stats.seconds,
                elapsed_seconds=sum(h.seconds for h in self.history),
            )  # fmt: skip
            self.replan(remade, len(train[0]), self.on_plan)
        if epoch + 1 == midway_epoch(self.plan):
            self.replan(self._checked_midway(epoch + 1), len(train[0]), self.on_plan)
        # an epoch-end checkpoint too, unless one was written fewer than checkpoint_every steps
        # ago: a resnet18 checkpoint is 179 MB, fsynced (0.6-1.5 s); one per short 64 px epoch
        # would spend about a minute of a 12-minute budget
        every = settings.checkpoint_every
        if every <= 0 or self.step - self.saved_step >= every:
            self.checkpoint(epoch + 1, 0)
        return stats

    def _checked_midway(self, done: int) -> EpochPlan:
        """The plan checked against the median of the whole epochs after the first (the
        restored history's too, so a resumed run checks against the same epochs)."""
        step = self.scheduler.last_epoch
        return replan_midway(
            self.plan, done=done, step=step, factor=self.scheduler.lr_lambdas[0](step),
            elapsed_seconds=sum(h.seconds for h in self.history),
            epoch_seconds=[h.seconds for h in self.history if h.whole and h.epoch > 1],
        )  # fmt: skip

    def _keep_if_best(self, stats: EpochStats, epoch: int) -> None:
        # with no validation images the last epoch is the one kept
        score = stats.val_acc if stats.val_acc is not None else float(epoch)
        if score >= self.best["acc"]:
            state = self.kept_model.state_dict()
            self.best = {
                "acc": score,
                "epoch": epoch + 1,
                "state": {k: v.detach().cpu().clone() for k, v in state.items()},
            }

    def result(
        self, val: tuple[torch.Tensor, torch.Tensor], *, resumed_from: int, started: float
    ) -> FitResult:
        """Load the best weights into the kept model and hand them back with the history."""
        best_state = self.best["state"]
        state = best_state if best_state is not None else self.kept_model.state_dict()
        self.kept_model.load_state_dict(state)
        val_preds = self.evaluate(val)[2] if len(val[0]) else None
        amp_dtype = self.amp_dtype
        return FitResult(
            state_dict={k: v.detach().cpu() for k, v in state.items()},
            history=self.history,
            best_epoch=self.best["epoch"],
            device=str(self.device),
            amp_dtype=str(amp_dtype).replace("torch.", "") if amp_dtype else "float32",
            train_seconds=time.perf_counter() - started,
            steps=self.step,
            resumed_from_step=resumed_from,
            val_predictions=val_preds,
            plan=self.plan,
            cpu_kind=cpu_kind(),
            crop_scale_min=self.crop_scale_min,
        )


def _fit(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val_images: torch.Tensor,
    val_labels: torch.Tensor,
    classes: list[str],
    settings: TrainSettings,
    *,
    checkpoint_path: Path | None,
    fingerprint: str,
    on_epoch: Callable[[EpochStats, float], None] | None,
    progress: Callable[[int], None] | None,
    on_warning: Callable[[str], None],
    on_plan: Callable[[EpochPlan], None] | None = None,
) -> FitResult:
    """`fit`'s body, run while the checkpoint folder's training lock is held."""
    device = select_device(settings.device)
    run = _Trainer(
        settings, classes, device,
        checkpoint_path=checkpoint_path, fingerprint=fingerprint, on_warning=on_warning,
    )  # fmt: skip
    train, val = (train_images, train_labels), (val_images, val_labels)
    if device.type == "cuda":
        # a GPU-resident dataset: uint8 images cross the bus once, batches never do
        train, val = tuple(t.to(device) for t in train), tuple(t.to(device) for t in val)
    ckpt = load_checkpoint(checkpoint_path, fingerprint) if checkpoint_path else None
    run.plan, run.scheduler = _plan_and_schedule(
        ckpt, settings, run.model, run.criterion, run.optimizer, train, val,
        device=device, amp_dtype=run.amp_dtype, on_plan=on_plan,
    )  # fmt: skip
    run.on_plan = on_plan
    run.crop_for(run.plan)
    if ckpt is not None:
        run.restore(ckpt)
    resumed_from, start_epoch = run.step, run.start_epoch
    started, epoch = time.perf_counter(), start_epoch
    while epoch < run.plan.epochs:
        stats = run.run_epoch(epoch, train, val, progress)
        elapsed = time.perf_counter() - started
        if on_epoch is not None:
            eta = elapsed / max(1, epoch + 1 - start_epoch) * (run.plan.epochs - epoch - 1)
            on_epoch(stats, eta)
        if over_budget(run.plan, elapsed=elapsed, last_epoch_seconds=stats.seconds, done=epoch + 1):
            on_warning(
                f"stopped after epoch {epoch + 1} of the {run.plan.epochs} planned: at the last "
                f"epoch's pace ({stats.seconds:.0f}s) the next would end past the budget "
                "(the machine slowed down after the plan was measured); the best epoch is kept"
            )
            break
        epoch += 1
    return run.result(val, resumed_from=resumed_from, started=started)


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
        with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(preset(images[start : start + batch_size]))
        predicted += logits.argmax(1).tolist()
    names = [model_file.classes[i] for i in predicted]
    return sum(n == t for n, t in zip(names, labels, strict=True)) / max(1, len(labels))
