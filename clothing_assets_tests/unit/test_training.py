"""Training functions on tiny tensors: fit, resume from a checkpoint, safe model loading."""

from __future__ import annotations

import io
import math
import os
import pickle
from dataclasses import replace

import pytest
import torch

from clothing_assets.ml.engine import make_optimizer, mix_batch
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.train import fit

SETTINGS = TrainSettings(
    architecture="resnet18", weights="none", image_size=32, n_epochs=2, batch_size=8,
    checkpoint_every=0, seed=3,
)  # fmt: skip


def _data(n_per_class: int = 8, classes: int = 3):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (n_per_class * classes, 3, 37, 37), generator=gen, dtype=torch.uint8
    )
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    for c in range(classes):  # a class signal the model can learn
        images[labels == c, c] = 230
    return images, labels


class Interrupted(Exception):
    pass


@pytest.mark.slow  # trains: not in make test-fast
def test_fit_learns_and_reports_every_epoch():
    images, labels = _data()
    result = fit(images, labels, images[:6], labels[:6], ["a", "b", "c"], SETTINGS)
    assert [h.epoch for h in result.history] == [1, 2]
    assert result.steps == 2 * (len(images) // SETTINGS.batch_size)
    assert all(h.val_acc is not None and 0.0 <= h.val_acc <= 1.0 for h in result.history)
    assert result.best_epoch in (1, 2)
    assert result.state_dict["fc.weight"].shape == (3, 512)


RECIPES = {
    "plain": {},
    "ema+mixup+cutmix": {"ema_decay": 0.9, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
    # SGD's momentum buffers are optimizer state a resume must restore, like AdamW's moments
    "sgd": {"optimizer": "sgd", "base_lr": 0.05, "weight_decay": 5e-4},
    # the default network, pretrained: its dropout and drop-connect draw from torch's global
    # random stream, which the checkpoint must carry
    "lite0": {"architecture": "efficientnet_lite0", "weights": "imagenet"},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("interrupt", ["epoch", "mid-epoch"])
@pytest.mark.slow  # trains: not in make test-fast
def test_resumed_training_equals_uninterrupted_training(tmp_path, interrupt, recipe):
    images, labels = _data()
    val = (images[:6], labels[:6])
    settings = replace(SETTINGS, checkpoint_every=2, **RECIPES[recipe])
    whole = fit(images, labels, *val, ["a", "b", "c"], settings)

    ckpt = tmp_path / "checkpoint.pt"
    steps = {"n": 0}

    def stop_after_first_epoch(stats, eta):
        raise Interrupted

    def stop_mid_epoch(n):
        steps["n"] += 1
        if steps["n"] == 4:  # after the checkpoint at step 4, inside epoch 2
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(
            images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt, fingerprint="f",
            on_epoch=stop_after_first_epoch if interrupt == "epoch" else None,
            progress=stop_mid_epoch if interrupt == "mid-epoch" else None,
        )  # fmt: skip
    assert ckpt.is_file()
    resumed = fit(
        images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt, fingerprint="f"
    )
    assert resumed.resumed_from_step > 0
    assert resumed.steps == whole.steps
    assert [h.epoch for h in resumed.history] == [1, 2]
    for key, tensor in whole.state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(resumed.state_dict[key], tensor, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("kind", "cls", "hyper"),
    [("adamw", torch.optim.AdamW, {}), ("sgd", torch.optim.SGD, {"nesterov": True})],
)
def test_make_optimizer_builds_the_named_kind_with_its_fused_kernel(kind, cls, hyper):
    optimizer = make_optimizer(build_model("resnet18", 3), 0.01, 1e-4, kind)
    group = optimizer.param_groups[0]
    assert type(optimizer) is cls
    assert (group["lr"], group["weight_decay"], group["fused"]) == (0.01, 1e-4, True)
    assert all(group[name] == value for name, value in hyper.items())


def test_an_unknown_optimizer_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="'adam' is not one of adamw, sgd"):
        make_optimizer(build_model("resnet18", 3), 0.01, 1e-4, "adam")


@pytest.mark.slow  # trains: not in make test-fast
def test_sgd_training_learns():
    images, labels = _data()
    settings = replace(SETTINGS, n_epochs=4, optimizer="sgd", base_lr=0.01, weight_decay=5e-4)
    result = fit(images, labels, images, labels, ["a", "b", "c"], settings)
    first, last = result.history[0], result.history[-1]
    assert last.train_loss < 0.5 * first.train_loss and last.train_acc >= 0.9


@pytest.mark.parametrize(("mixup", "cutmix"), [(0.0, 0.0), (0.4, 0.0), (0.0, 1.0), (0.2, 1.0)])
def test_mix_batch_mixes_pixels_and_targets_alike(mixup, cutmix):
    x = torch.stack([torch.full((3, 16, 16), float(i)) for i in range(4)])
    y = torch.tensor([0, 1, 2, 0])
    mixed, targets = mix_batch(
        x, y, 3, mixup_alpha=mixup, cutmix_alpha=cutmix, generator=torch.Generator().manual_seed(5)
    )
    again, _ = mix_batch(
        x, y, 3, mixup_alpha=mixup, cutmix_alpha=cutmix, generator=torch.Generator().manual_seed(5)
    )
    assert torch.equal(mixed, again)  # all randomness from the generator
    torch.testing.assert_close(targets.sum(1), torch.ones(4))
    if mixup == cutmix == 0.0:
        assert torch.equal(mixed, x)
        assert torch.equal(targets, torch.nn.functional.one_hot(y, 3).float())
        return
    # image i is mixed with image i-1 (a roll by one): its pixels are lam*i + (1-lam)*(i-1)
    # on average, and its target gives class y[i] at least lam
    for i in range(4):
        j = (i - 1) % 4
        lam = (mixed[i].mean() - j) / (i - j)
        expected = torch.zeros(3)
        expected[y[i]] += lam
        expected[y[j]] += 1 - lam
        torch.testing.assert_close(targets[i], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # trains: not in make test-fast
def test_ema_with_no_memory_keeps_the_live_weights_and_with_long_memory_the_early_ones():
    images, labels = _data()
    val = (images[:6], labels[:6])
    plain = fit(images, labels, *val, ["a", "b", "c"], SETTINGS)
    short = fit(images, labels, *val, ["a", "b", "c"], replace(SETTINGS, ema_decay=1e-9))
    long = fit(images, labels, *val, ["a", "b", "c"], replace(SETTINGS, ema_decay=1 - 1e-9))
    key = "fc.weight"
    torch.testing.assert_close(short.state_dict[key], plain.state_dict[key], rtol=1e-3, atol=1e-4)
    # an average that never moves from the first step's weights ends far from the trained ones
    moved = (plain.state_dict[key] - long.state_dict[key]).abs().max()
    assert moved > 10 * (plain.state_dict[key] - short.state_dict[key]).abs().max()


@pytest.mark.slow  # trains: not in make test-fast
def test_compiled_training_matches_eager_training():
    """torch.compile (inductor, on this CPU) trains the same model as eager mode."""
    images, labels = _data()
    val = (images[:6], labels[:6])
    settings = replace(SETTINGS, n_epochs=1, bf16="off")
    eager = fit(images, labels, *val, ["a", "b", "c"], settings)
    compiled = fit(images, labels, *val, ["a", "b", "c"], replace(settings, compile=True))
    assert compiled.steps == eager.steps
    torch.manual_seed(settings.seed)  # fit's own initialisation
    initial = build_model(settings.architecture, 3).state_dict()
    # rounding differences can flip the Adam step of a near-zero gradient, so compare per
    # tensor: the two runs must have moved each weight tensor the same way, to within 10 % of
    # how far training moved it (an untrained or differently trained copy is off by ~100 %)
    for key, tensor in eager.state_dict.items():
        if tensor.is_floating_point() and not key.endswith("running_var"):
            moved = (tensor - initial[key]).abs().mean()
            apart = (compiled.state_dict[key] - tensor).abs().mean()
            assert apart <= 0.1 * moved + 1e-7, key


@pytest.mark.slow  # trains: not in make test-fast
def test_checkpoint_of_other_config_is_not_resumed(tmp_path):
    images, labels = _data()
    ckpt = tmp_path / "checkpoint.pt"
    one = replace(SETTINGS, n_epochs=1)

    def fit_as(fingerprint: str):
        return fit(
            images, labels, images[:6], labels[:6], ["a", "b", "c"], one,
            checkpoint_path=ckpt, fingerprint=fingerprint,
        )  # fmt: skip

    fit_as("A")
    other = fit_as("B")
    assert other.resumed_from_step == 0


@pytest.mark.slow  # trains: not in make test-fast
def test_model_file_round_trips_with_weights_only(tmp_path):
    images, labels = _data()
    result = fit(
        images, labels, images[:6], labels[:6], ["a", "b", "c"], replace(SETTINGS, n_epochs=1)
    )
    data = ModelFile.of_training(result.state_dict, ["a", "b", "c"], SETTINGS).save(
        tmp_path / "m.pt"
    )
    loaded = ModelFile.load(data)
    model = loaded.build()
    assert loaded.classes == ("a", "b", "c") and loaded.image_size == 32
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clothing-assets-pwned",))


def test_a_model_file_that_would_run_code_is_refused(tmp_path):
    marker = "/tmp/clothing-assets-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    buffer = io.BytesIO()
    torch.save({"format": "clothing-assets/1", "evil": _Exploit()}, buffer, pickle_module=pickle)
    with pytest.raises(ValueError, match="not a clothing-assets model file"):
        ModelFile.load(buffer.getvalue())
    assert not os.path.exists(marker)


@pytest.mark.slow  # trains: not in make test-fast
def test_a_budget_that_fits_every_epoch_trains_exactly_as_no_budget():
    """The measurement runs on a copy with its random streams restored: for the same plan the
    run is bit for bit the unbudgeted one."""
    images, labels = _data()
    val = (images[:6], labels[:6])
    unbudgeted = fit(images, labels, *val, ["a", "b", "c"], replace(SETTINGS, max_train_minutes=0))
    budgeted = fit(images, labels, *val, ["a", "b", "c"], replace(SETTINGS, max_train_minutes=1e4))
    assert unbudgeted.plan.budget_seconds is None and unbudgeted.plan.epochs == 2
    assert budgeted.plan.epochs == 2 and "fits all n_epochs" in budgeted.plan.reason
    assert budgeted.plan.images_per_second > 0
    assert [h.epoch for h in budgeted.history] == [1, 2]
    for key, tensor in unbudgeted.state_dict.items():
        assert torch.equal(budgeted.state_dict[key], tensor), key


@pytest.mark.slow  # trains: not in make test-fast
def test_a_tiny_budget_trains_one_epoch_with_the_schedule_sized_to_it():
    images, labels = _data()
    settings = replace(SETTINGS, n_epochs=3, max_train_minutes=1e-6)
    planned = []
    result = fit(
        images, labels, images[:6], labels[:6], ["a", "b", "c"], settings, on_plan=planned.append
    )
    assert planned == [result.plan] and result.plan.epochs == 1
    assert "too small for one epoch" in result.plan.reason
    assert [h.epoch for h in result.history] == [1]
    assert result.history[-1].lr == pytest.approx(0.0, abs=1e-12)  # the cosine ran to its end
    assert result.cpu_kind


@pytest.mark.slow  # trains: not in make test-fast
def test_a_resumed_run_keeps_the_plan_of_its_checkpoint(tmp_path):
    """Interrupted under a plan of 2 epochs, resumed under a budget that would now plan 1: the
    checkpoint's plan wins, so the schedule it resumes and the epoch count stay as planned."""
    images, labels = _data()
    val = (images[:6], labels[:6])
    ckpt = tmp_path / "checkpoint.pt"

    def stop(stats, eta):
        raise Interrupted

    first = replace(SETTINGS, checkpoint_every=2, max_train_minutes=0)
    with pytest.raises(Interrupted):
        fit(images, labels, *val, ["a", "b", "c"], first, checkpoint_path=ckpt, fingerprint="f",
            on_epoch=stop)  # fmt: skip
    tiny = replace(first, max_train_minutes=1e-6)
    resumed = fit(
        images, labels, *val, ["a", "b", "c"], tiny, checkpoint_path=ckpt, fingerprint="f"
    )
    assert resumed.resumed_from_step > 0
    assert resumed.plan.epochs == 2 and resumed.plan.budget_seconds is None
    assert [h.epoch for h in resumed.history] == [1, 2]


def _scheduled_trainer(settings: TrainSettings, *, epochs: int, seconds_per_epoch: float):
    """A `fit` run's trainer with a budgeted plan of `epochs` and its LR schedule, nothing run:
    (trainer, steps per epoch, training images) for 24 images in batches of 8."""
    from clothing_assets.ml.budget import EpochPlan
    from clothing_assets.ml.engine import planned_schedule
    from clothing_assets.ml.train import _Trainer

    run = _Trainer(settings, ["a", "b", "c"], torch.device("cpu"))
    steps, n_train = 3, 24
    run.plan = EpochPlan(
        epochs=epochs, max_epochs=settings.n_epochs, budget_seconds=60.0,
        seconds_per_epoch=seconds_per_epoch,
    )  # fmt: skip
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, planned_schedule(run.plan, settings, steps)
    )
    return run, steps, n_train


def test_a_re_made_plan_resizes_the_schedule_and_keeps_the_lr_so_far():
    """After the first epoch (the warmup), a re-plan from 3 to 6 epochs stretches the cosine to
    end at 0 after 6 epochs; the warmup's LRs are the same under both plans."""
    from clothing_assets.ml.engine import planned_schedule

    settings = replace(SETTINGS, n_epochs=6, warmup_epochs=1.0)
    run, steps, n_train = _scheduled_trainer(settings, epochs=3, seconds_per_epoch=20.0)
    warmup = []
    for _ in range(steps):  # the first epoch
        warmup.append(run.optimizer.param_groups[0]["lr"])
        run.optimizer.step()
        run.scheduler.step()
    seen = []
    longer = replace(run.plan, epochs=6, measured_epochs=3, reason="re-planned after epoch 1")
    run.replan(longer, n_train, seen.append)
    assert run.plan is longer and seen == [longer]
    lrs = []
    for _ in range(5 * steps):  # the five epochs left
        run.optimizer.step()
        run.scheduler.step()
        lrs.append(run.optimizer.param_groups[0]["lr"])
    six = planned_schedule(longer, settings, steps)
    assert warmup == pytest.approx([settings.base_lr * six(s) for s in range(steps)])
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)  # the cosine ends with the 6th epoch
    assert min(lrs[:-1]) > 0  # and not before (3 epochs would have reached 0 at step 9)
    run.replan(longer, n_train, seen.append)  # the same plan again: nothing happens
    assert seen == [longer]


def test_a_long_plan_is_re_made_after_its_second_epoch_from_that_epochs_time(monkeypatch):
    """A measured plan of 15 or more epochs re-plans once, after epoch 2 (the first can carry
    one-off costs), from epoch 2's time and both epochs' sum; the run ends with the new plan.
    The re-plan is made deterministic (16 planned, re-made to 3): nothing is timed."""
    from clothing_assets.ml import train

    calls = []

    def three_epochs(plan, *, done, elapsed_seconds, epoch_seconds):
        calls.append((plan.epochs, done))
        assert elapsed_seconds >= epoch_seconds > 0  # both epochs' time, and the second's
        return replace(plan, epochs=3, measured_epochs=plan.epochs, reason="re-planned")

    monkeypatch.setattr(train, "replan_after_epoch", three_epochs)
    images, labels = _data()
    settings = replace(SETTINGS, n_epochs=16, max_train_minutes=600)
    result = fit(images, labels, images[:6], labels[:6], ["a", "b", "c"], settings)
    assert calls == [(16, 2)]
    assert (result.plan.epochs, result.plan.measured_epochs) == (3, 16)
    assert [h.epoch for h in result.history] == [1, 2, 3]


@pytest.mark.slow  # trains: not in make test-fast
def test_a_resume_from_before_the_second_epoch_re_plans_as_the_whole_run_did(tmp_path, monkeypatch):
    """A long plan re-plans after epoch 2; a crash after epoch 1 leaves a checkpoint with the
    measured plan, and the resumed run re-plans after epoch 2 just as the uninterrupted one
    did, so both end after the same epochs with the same weights. Made deterministic (16
    planned, re-made to 3): nothing is timed."""
    from clothing_assets.ml import train

    calls = []

    def three_epochs(plan, *, done, elapsed_seconds, epoch_seconds):
        calls.append(done)
        if plan.measured_epochs is not None:  # as the real one: a plan is re-made once
            return plan
        return replace(plan, epochs=3, measured_epochs=plan.epochs, reason="re-planned")

    monkeypatch.setattr(train, "replan_after_epoch", three_epochs)
    images, labels = _data()
    val = (images[:6], labels[:6])
    settings = replace(SETTINGS, n_epochs=16, max_train_minutes=600, checkpoint_every=0)
    whole = fit(images, labels, *val, ["a", "b", "c"], settings)
    assert calls == [2] and whole.plan.epochs == 3

    def stop(stats, eta):
        raise Interrupted

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):  # after epoch 1, before the re-plan
        fit(images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt,
            fingerprint="f", on_epoch=stop)  # fmt: skip
    assert calls == [2]
    resumed = fit(
        images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt, fingerprint="f"
    )
    assert calls == [2, 2]  # the resumed run re-planned after epoch 2, once
    assert (resumed.plan.epochs, resumed.plan.measured_epochs) == (3, 16)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    for key, tensor in whole.state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(resumed.state_dict[key], tensor, rtol=1e-3, atol=1e-4)


def test_the_half_way_check_decays_the_lr_from_where_it_is():
    """A plan of 6 epochs checked after epoch 3 and re-made to 8: the LR goes on from the
    multiplier it had reached (no jump) and decays to 0 at the end of epoch 8, not before."""
    settings = replace(SETTINGS, n_epochs=8, warmup_epochs=1.0)
    run, steps, n_train = _scheduled_trainer(settings, epochs=6, seconds_per_epoch=10.0)
    for _ in range(3 * steps):
        run.optimizer.step()
        run.scheduler.step()
    before = run.optimizer.param_groups[0]["lr"]  # the LR of the next step under 6 epochs
    longer = run._checked_midway(3)  # nothing timed in this run: no epoch times, it stands
    assert longer is run.plan
    step, factor = run.scheduler.last_epoch, run.scheduler.lr_lambdas[0](9)
    longer = replace(run.plan, epochs=8, decay_from_step=step, decay_from_factor=factor)
    run.replan(longer, n_train, None)
    lrs = []
    for _ in range(5 * steps):  # the five epochs left
        run.optimizer.step()
        run.scheduler.step()
        lrs.append(run.optimizer.param_groups[0]["lr"])
    assert step == 9 and 0 < before < settings.base_lr
    assert lrs[0] == pytest.approx(
        before * 0.5 * (1 + math.cos(math.pi / 15)), rel=1e-9
    )  # one step into a 15-step cosine from `before`
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))  # decaying throughout
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12) and min(lrs[:-1]) > 0


def _midway_to(epochs: int, calls: list):
    def replan(plan, *, done, step, factor, elapsed_seconds, epoch_seconds):
        calls.append(done)
        if plan.decay_from_step is not None:  # as the real one: a plan is checked once
            return plan
        assert len(epoch_seconds) == done - 1 and elapsed_seconds >= sum(epoch_seconds)
        return replace(plan, epochs=epochs, decay_from_step=step, decay_from_factor=factor,
                       measured_epochs=plan.epochs, reason="checked")  # fmt: skip

    return replan


@pytest.mark.slow  # trains: not in make test-fast
@pytest.mark.parametrize("crash_after", [2, 3], ids=["before the check", "after the check"])
def test_the_half_way_check_re_makes_the_plan_and_a_resume_keeps_it(
    tmp_path, monkeypatch, crash_after
):
    """A plan of 6 epochs is checked after epoch 3 and re-made to 4 (deterministically here:
    nothing is timed). A run that crashed before the check checks on resuming, one that
    crashed after it resumes the checked plan; both end as the uninterrupted run did."""
    from clothing_assets.ml import train

    calls = []
    monkeypatch.setattr(train, "replan_midway", _midway_to(4, calls))
    images, labels = _data()
    val = (images[:6], labels[:6])
    settings = replace(SETTINGS, n_epochs=6, max_train_minutes=600, checkpoint_every=0)
    whole = fit(images, labels, *val, ["a", "b", "c"], settings)
    assert calls == [3] and (whole.plan.epochs, whole.plan.measured_epochs) == (4, 6)
    assert [h.epoch for h in whole.history] == [1, 2, 3, 4]

    def stop(stats, eta):
        if stats.epoch == crash_after:
            raise Interrupted

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        fit(images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt,
            fingerprint="f", on_epoch=stop)  # fmt: skip
    assert calls == [3] + ([3] if crash_after == 3 else [])
    resumed = fit(
        images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt, fingerprint="f"
    )
    assert calls == [3, 3]  # checked on resuming only if the crash came before the check

    def anchor(plan):  # the same plan, the same LR anchor (the timings differ run to run)
        return plan.epochs, plan.measured_epochs, plan.decay_from_step, plan.decay_from_factor

    assert anchor(resumed.plan) == anchor(whole.plan) and whole.plan.decay_from_step == 9
    assert [h.epoch for h in resumed.history] == [1, 2, 3, 4]
    for key, tensor in whole.state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(resumed.state_dict[key], tensor, rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # trains: not in make test-fast
def test_a_resume_from_the_first_epochs_checkpoint_keeps_the_re_made_plan(tmp_path, monkeypatch):
    """With a checkpoint at every epoch end, the one written after epoch 1 holds the plan
    re-made from that epoch, so a crash right after it resumes to the same end. The re-plan
    is made deterministic here (3 epochs planned, re-made to 2): nothing is timed."""
    from clothing_assets.ml import train

    calls = []

    def two_epochs(plan, *, done, elapsed_seconds, epoch_seconds):
        assert done == 1  # a plan of 3 re-plans after its first epoch
        calls.append(plan.epochs)
        return replace(plan, epochs=2, measured_epochs=plan.epochs, reason="re-planned")

    monkeypatch.setattr(train, "replan_after_epoch", two_epochs)
    images, labels = _data()
    val = (images[:6], labels[:6])
    settings = replace(SETTINGS, n_epochs=3, max_train_minutes=600, checkpoint_every=0)
    whole = fit(images, labels, *val, ["a", "b", "c"], settings)
    assert whole.plan.epochs == 2 and [h.epoch for h in whole.history] == [1, 2]

    def stop(stats, eta):
        raise Interrupted

    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(Interrupted):
        fit(images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt,
            fingerprint="f", on_epoch=stop)  # fmt: skip
    assert calls == [3, 3]  # each fresh run re-planned once, from the 3 epochs it measured
    resumed = fit(
        images, labels, *val, ["a", "b", "c"], settings, checkpoint_path=ckpt, fingerprint="f"
    )
    assert calls == [3, 3]  # a resumed run does not re-plan
    assert resumed.resumed_from_step > 0
    assert (resumed.plan.epochs, resumed.plan.measured_epochs) == (2, 3)
    assert [h.epoch for h in resumed.history] == [1, 2]
    for key, tensor in whole.state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(resumed.state_dict[key], tensor, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("setting", "planned", "scale"),
    [
        (0.0, 15, 0.5),  # a short plan underfits: milder crops
        (0.0, 20, 0.5),
        (0.0, 21, 0.25),  # a longer one keeps the stronger augmentation
        (0.0, 71, 0.25),
        (0.35, 15, 0.35),  # a set crop_scale_min is used as it is
        (0.35, 71, 0.35),
    ],
)
def test_the_smallest_training_crop_follows_the_plan_unless_set(setting, planned, scale):
    assert replace(SETTINGS, crop_scale_min=setting).crop_scale_for(planned) == scale


def test_the_crops_are_chosen_on_the_timed_steps_plan_which_re_plans_keep():
    """A plan measured at 30 epochs and re-made to 12 crops as the 30-epoch plan did, so a
    run resumed with the re-made plan crops as the whole run did."""
    settings = replace(SETTINGS, n_epochs=40, crop_scale_min=0.0)
    run, _steps, _n = _scheduled_trainer(settings, epochs=30, seconds_per_epoch=2.0)
    run.crop_for(run.plan)
    assert run.crop_scale_min == 0.25 and run.recipe.preset.scale == (0.25, 1.0)
    run.crop_for(replace(run.plan, epochs=12, measured_epochs=30))
    assert run.crop_scale_min == 0.25
    run.crop_for(replace(run.plan, epochs=30, measured_epochs=12))
    assert run.crop_scale_min == 0.5


@pytest.mark.slow  # trains: not in make test-fast
def test_fit_reports_the_crop_it_trained_with():
    images, labels = _data()
    by_plan = replace(SETTINGS, crop_scale_min=0.0)
    result = fit(images, labels, images[:6], labels[:6], ["a", "b", "c"], by_plan)
    assert result.crop_scale_min == 0.5  # 2 epochs, no budget: a short plan
    result = fit(images, labels, images[:6], labels[:6], ["a", "b", "c"], SETTINGS)
    assert result.crop_scale_min == SETTINGS.crop_scale_min == 0.25  # set: used as it is
