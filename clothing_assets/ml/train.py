"""`fit`: a training run in the style of torchvision's classification reference, over the
epochs its budget plans, with checkpoints a crashed run resumes from; the `trained_model`
asset wires it up and logs. One epoch's loop is `engine.train_one_epoch`."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from clothing_assets.ml.budget import (
    EpochPlan,
    midway_epoch,
    over_budget,
    replan_after_epoch,
    replan_epoch,
    replan_midway,
)
from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.devices import select_device
from clothing_assets.ml.durable import training_lock
from clothing_assets.ml.engine import (
    Recipe,
    epoch_batches,
    evaluate,
    make_ema,
    make_optimizer,
    planned_schedule,
    train_one_epoch,
    training_amp_dtype,
)
from clothing_assets.ml.fit_types import EpochStats, FitHooks, FitResult
from clothing_assets.ml.model_file import ModelFile, load_checkpoint, save_checkpoint
from clothing_assets.ml.models import build_model, freeze_early_layers
from clothing_assets.ml.presets import ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.throughput import measure_throughput, plan_training

log = logging.getLogger(__name__)
_Split = tuple[torch.Tensor, torch.Tensor]  # images, labels


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
    lock_timeout_s: float | None = None,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> FitResult:
    """Train a fresh (or resumed) model and return the best validation epoch's weights.

    With `max_train_minutes`, a few steps are timed first (on a copy: the run is unchanged)
    and the epochs that fit, at most `n_epochs`, are planned; the run re-plans once from an
    early epoch's time (`budget.replan_after_epoch`: the second, or the first of a plan under
    `budget.REPLAN_MIN_EPOCHS`), if that epoch runs whole in this process, and checks the plan
    once more half way against the median epoch (`budget.replan_midway`). The
    learning-rate schedule is sized to the plan, the checkpoint keeps it and a resumed run
    reuses it. `on_plan` gets the plan before the first epoch, and again if it is re-made.
    With `init_state` (a state dict of the same network and classes) training starts from
    those weights instead of `settings.weights`.

    A checkpoint is written every `checkpoint_every` steps and at every epoch end; if
    `checkpoint_path` holds one with the same `fingerprint`, training resumes from it and ends
    after the same number of steps as an uninterrupted run. With a checkpoint, training holds
    its folder's `training_lock`, waiting up to `lock_timeout_s` for another run to release it
    (None: as long as it takes); a checkpoint that cannot be written (a full disk) is reported
    to `on_warning` and training goes on.
    """
    hooks = FitHooks(
        checkpoint_path=checkpoint_path, fingerprint=fingerprint, on_epoch=on_epoch,
        progress=progress, on_warning=on_warning or log.warning, on_plan=on_plan,
    )  # fmt: skip
    lock = (
        training_lock(checkpoint_path.parent, timeout_s=lock_timeout_s)
        if checkpoint_path
        else contextlib.nullcontext()
    )
    with lock:
        return _fit(
            (train_images, train_labels), (val_images, val_labels), classes, settings, hooks,
            init_state,
        )  # fmt: skip


class _Trainer:
    """One run of `fit`: the model, its optimizer and EMA, and where training stands (what a
    checkpoint saves and a resume restores)."""

    plan: EpochPlan
    scheduler: torch.optim.lr_scheduler.LambdaLR
    frozen_parameters: int = 0

    def __init__(
        self,
        settings: TrainSettings,
        classes: list[str],
        device: torch.device,
        hooks: FitHooks | None = None,
        init_state: Mapping[str, torch.Tensor] | None = None,
    ) -> None:
        self.settings, self.classes, self.device = settings, classes, device
        self.hooks = hooks or FitHooks()
        torch.manual_seed(settings.seed)
        model = build_model(
            settings.architecture, len(classes),
            weights=settings.weights if init_state is None else "none",
            image_size=settings.image_size,
        )  # fmt: skip
        if init_state is not None:
            model.load_state_dict(init_state)
        if settings.weights != "none" or init_state is not None:
            self.frozen_parameters = freeze_early_layers(model, settings.frozen_blocks)
        self.model = model.to(device, memory_format=torch.channels_last)
        self.optimizer = make_optimizer(
            self.model, settings.base_lr, settings.weight_decay, settings.optimizer
        )
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: cuDNN picks its fastest kernels
        # described as the model file will be: its normalisation and eval preset
        self.described = ModelFile.of_training({}, classes, settings)
        self.eval_preset = self.described.eval_preset()
        # until the plan decides the crops (`crop_for`): those of the longest plan, which the
        # budget's timed steps use (their size costs little time)
        self.recipe = Recipe.of(
            settings, self._train_preset(settings.crop_scale_for(settings.n_epochs)),
            num_classes=len(classes), device=device,
            amp_dtype=training_amp_dtype(device, settings),
        )  # fmt: skip
        self.crop_scale_min = settings.crop_scale_for(settings.n_epochs)
        self.ema = make_ema(self.model, settings.ema_decay)
        # the model that is validated and kept: the weight average when there is one
        self.kept_model = self.ema.module if self.ema is not None else self.model
        self.forward = torch.compile(self.model) if settings.compile else self.model
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.saved_step = 0  # the step of the last checkpoint written
        self.history: list[EpochStats] = []
        self.best: dict[str, Any] = {"acc": -1.0, "epoch": -1, "state": None}

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.recipe.amp_dtype

    def _train_preset(self, crop_scale_min: float) -> ClassificationPresetTrain:
        return ClassificationPresetTrain(
            crop_size=self.settings.image_size, scale=(crop_scale_min, 1.0),
            mean=self.described.mean, std=self.described.std,
        )  # fmt: skip

    def plan_and_schedule(self, ckpt: dict[str, Any] | None, train: _Split, val: _Split) -> None:
        """The run's epoch plan (the checkpoint's verbatim, else measured against the budget on
        a copy of the model) and the warmup-cosine schedule sized to the planned epochs."""
        settings = self.settings
        steps_per_epoch = len(epoch_batches(len(train[0]), settings.batch_size, seed=0, epoch=0))
        self.plan = plan_training(
            ckpt.get("plan") if ckpt is not None else None, settings,
            steps_per_epoch=steps_per_epoch, n_val=len(val[0]),
            measure=lambda: measure_throughput(
                self.model, train, val, self.recipe, settings=settings
            ),
        )  # fmt: skip
        log.info(self.plan.describe())
        if self.hooks.on_plan is not None:
            self.hooks.on_plan(self.plan)
        schedule = planned_schedule(self.plan, settings, steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)

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
        self.recipe = replace(self.recipe, preset=self._train_preset(self.crop_scale_min))

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
        if self.hooks.checkpoint_path is None:
            return
        try:
            save_checkpoint(self._checkpoint_dict(epoch, batch), self.hooks.checkpoint_path)
            self.saved_step = self.step
        except OSError as exc:  # a lost checkpoint costs a resume, not the run
            self.hooks.on_warning(
                f"checkpoint at step {self.step} not written, training goes on: {exc}"
            )

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
            "mean": list(self.described.mean),
            "std": list(self.described.std),
            "config": asdict(self.settings),
            "fingerprint": self.hooks.fingerprint,
            "plan": self.plan.as_dict(),
            "history": [asdict(h) for h in self.history],
            "best_acc": self.best["acc"],
            "best_epoch": self.best["epoch"],
            "best_model": self.best["state"],
        }

    def evaluate(self, val: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float, torch.Tensor]:
        """`evaluate` of the kept model on the validation split."""
        return evaluate(
            self.kept_model, self.recipe.criterion, *val, preset=self.eval_preset,
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
            self.model, train, self.optimizer, self.recipe, epoch=epoch,
            scheduler=self.scheduler, ema=self.ema, forward=self.forward,
            start_batch=self.start_batch, on_step=on_step,
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
            self.replan(remade, len(train[0]), self.hooks.on_plan)
        if epoch + 1 == midway_epoch(self.plan):
            self.replan(self._checked_midway(epoch + 1), len(train[0]), self.hooks.on_plan)
        # an epoch-end checkpoint too, unless one was written fewer than checkpoint_every steps
        # ago: a resnet18 checkpoint is 179 MB, fsynced (0.6-1.5 s); one per short 64 px epoch
        # would spend about a minute of the training budget
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
            frozen_parameters=self.frozen_parameters,
        )


def _fit(
    train: _Split,
    val: _Split,
    classes: list[str],
    settings: TrainSettings,
    hooks: FitHooks,
    init_state: Mapping[str, torch.Tensor] | None = None,
) -> FitResult:
    """`fit`'s body, run while the checkpoint folder's training lock is held."""
    device = select_device(settings.device)
    run = _Trainer(settings, classes, device, hooks, init_state)
    if device.type == "cuda":
        # a GPU-resident dataset: uint8 images cross the bus once, batches never do
        train, val = tuple(t.to(device) for t in train), tuple(t.to(device) for t in val)
    path = hooks.checkpoint_path
    ckpt = load_checkpoint(path, hooks.fingerprint) if path else None
    run.plan_and_schedule(ckpt, train, val)
    run.crop_for(run.plan)
    if ckpt is not None:
        run.restore(ckpt)
    resumed_from, start_epoch = run.step, run.start_epoch
    started, epoch = time.perf_counter(), start_epoch
    while epoch < run.plan.epochs:
        stats = run.run_epoch(epoch, train, val, hooks.progress)
        elapsed = time.perf_counter() - started
        if hooks.on_epoch is not None:
            eta = elapsed / max(1, epoch + 1 - start_epoch) * (run.plan.epochs - epoch - 1)
            hooks.on_epoch(stats, eta)
        if over_budget(run.plan, elapsed=elapsed, last_epoch_seconds=stats.seconds, done=epoch + 1):
            hooks.on_warning(
                f"stopped after epoch {epoch + 1} of the {run.plan.epochs} planned: at the last "
                f"epoch's pace ({stats.seconds:.0f}s) the next would end past the budget "
                "(the machine slowed down after the plan was measured); the best epoch is kept"
            )
            break
        epoch += 1
    return run.result(val, resumed_from=resumed_from, started=started)
