"""One epoch of training (ml/engine.py): the recipe it takes, the batches it draws, the steps
it runs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from clothing_assets.ml.engine import Recipe, train_one_epoch, training_batches
from clothing_assets.ml.presets import ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings

CPU = torch.device("cpu")


def _recipe(**changes) -> Recipe:
    settings = TrainSettings(
        architecture="resnet18", image_size=16, batch_size=4, seed=7, label_smoothing=0.2
    )
    preset = ClassificationPresetTrain(crop_size=16)
    recipe = Recipe.of(settings, preset, num_classes=3, device=CPU, amp_dtype=None)
    return replace(recipe, **changes)


def _data(n: int = 14) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 19, 19), generator=gen, dtype=torch.uint8)
    return images, torch.arange(n) % 3


def test_the_recipe_of_settings_carries_their_batches_loss_and_mixing():
    recipe = _recipe()
    assert (recipe.batch_size, recipe.seed, recipe.num_classes) == (4, 7, 3)
    assert recipe.criterion.label_smoothing == 0.2 and not recipe.mixes
    assert replace(recipe, cutmix_alpha=1.0).mixes


def test_mixing_without_a_class_count_is_refused():
    with pytest.raises(ValueError, match="mixup/cutmix need num_classes"):
        _recipe(num_classes=0, mixup_alpha=0.2)


@pytest.mark.parametrize("mixing", [{}, {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}])
def test_batches_drawn_from_a_later_start_are_the_whole_epochs_batches_from_there(mixing):
    """What a run resumed mid-epoch trains on: the same augmented, mixed batches."""
    recipe = _recipe(**mixing)
    whole = list(training_batches(*_data(), recipe, epoch=1))
    later = list(training_batches(*_data(), recipe, epoch=1, start=2))
    assert [b for b, *_ in whole] == [0, 1, 2]  # 14 images: three full batches of 4
    assert [b for b, *_ in later] == [2]
    for got, want in zip(later[0], whole[2], strict=True):
        assert torch.equal(torch.as_tensor(got), torch.as_tensor(want))
    other_epoch = next(training_batches(*_data(), recipe, epoch=2))
    assert not torch.equal(other_epoch[1], whole[0][1])


def test_one_epoch_steps_the_optimizer_scheduler_and_average_once_per_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    before = model[1].weight.detach().clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema = torch.optim.swa_utils.AveragedModel(model)
    steps: list[tuple[int, int]] = []
    loss, accuracy, seen = train_one_epoch(
        model, _data(), optimizer, _recipe(), epoch=0, scheduler=scheduler, ema=ema,
        start_batch=1, on_step=lambda b, n: steps.append((b, n)),
    )  # fmt: skip
    assert steps == [(1, 4), (2, 4)] and seen == 8
    assert scheduler.last_epoch == 2 and int(ema.n_averaged) == 2
    assert loss > 0 and 0.0 <= accuracy <= 1.0
    assert not torch.equal(model[1].weight, before)


def test_an_epoch_with_fewer_than_two_images_trains_nothing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss, _, seen = train_one_epoch(model, _data(1), optimizer, _recipe(), epoch=0)
    assert seen == 0 and loss != loss  # NaN: nothing to average
