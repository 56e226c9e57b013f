"""Frozen early layers: which layers `frozen_blocks` keeps, and that training leaves them be."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clothing_assets.ml.engine import make_optimizer
from clothing_assets.ml.fit_types import FitResult
from clothing_assets.ml.models import build_model, early_layers, freeze_early_layers
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.train import fit


def _trainable(layer: nn.Module) -> set[bool]:
    return {p.requires_grad for p in layer.parameters()}


@pytest.mark.parametrize(
    ("architecture", "blocks"),
    [("efficientnet_lite0", 16), ("resnet18", 8), ("mobilenet_v3_small", 12)],
)
def test_the_stem_and_the_first_blocks_are_frozen_and_the_rest_trains(architecture, blocks):
    model = build_model(architecture, 4, image_size=64)
    stem, body = early_layers(model)
    assert len(body) == blocks
    frozen = freeze_early_layers(model, 2)
    assert frozen == sum(p.numel() for layer in [*stem, *body[:2]] for p in layer.parameters())
    assert all(_trainable(layer) == {False} for layer in [*stem, *body[:2]])
    assert all(_trainable(layer) <= {True} for layer in body[2:])
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert _trainable(head) == {True}
    optimizer = make_optimizer(model, 1e-3, 0.0)
    in_optimizer = sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    assert in_optimizer == sum(p.numel() for p in model.parameters()) - frozen


def test_no_frozen_blocks_trains_every_layer():
    model = build_model("resnet18", 4, image_size=64)
    assert freeze_early_layers(model, 0) == 0
    assert all(p.requires_grad for p in model.parameters())


def test_more_frozen_blocks_than_the_network_has_is_refused_with_its_count():
    model = build_model("resnet18", 4, image_size=64)
    with pytest.raises(ValueError, match="frozen_blocks 9 is more than the 8 blocks"):
        freeze_early_layers(model, 9)


def test_a_network_without_known_blocks_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="set frozen_blocks: 0"):
        freeze_early_layers(nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), 1)


def _data(n_per_class: int = 6, classes: int = 2):
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_per_class * classes, 3, 37, 37), generator=gen,
                           dtype=torch.uint8)  # fmt: skip
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return images, labels


def _fit(init: dict[str, torch.Tensor], **changes) -> FitResult:
    settings = TrainSettings(
        architecture="resnet18", weights="none", image_size=32, n_epochs=1, batch_size=4,
        checkpoint_every=0, max_train_minutes=0.0, **changes,
    )  # fmt: skip
    images, labels = _data()
    return fit(images, labels, images[:4], labels[:4], ["a", "b"], settings,
               init_state=init)  # fmt: skip


def test_training_from_given_weights_keeps_the_frozen_layers_and_moves_the_rest():
    torch.manual_seed(0)
    start = {
        k: v.clone() for k, v in build_model("resnet18", 2, image_size=32).state_dict().items()
    }
    result = _fit(start, frozen_blocks=3)
    assert result.frozen_parameters == sum(
        v.numel() for k, v in start.items()
        if k.startswith(("conv1.", "bn1.", "layer1.", "layer2.0.")) and "running" not in k
        and "num_batches" not in k
    )  # fmt: skip
    trained = result.state_dict
    assert torch.equal(trained["conv1.weight"], start["conv1.weight"])
    assert torch.equal(trained["layer2.0.conv1.weight"], start["layer2.0.conv1.weight"])
    assert not torch.equal(trained["layer2.1.conv1.weight"], start["layer2.1.conv1.weight"])
    assert not torch.equal(trained["fc.weight"], start["fc.weight"])


def test_training_from_random_initialisation_trains_every_layer_whatever_frozen_blocks_says():
    settings = TrainSettings(
        architecture="resnet18", weights="none", image_size=32, n_epochs=1, batch_size=4,
        checkpoint_every=0, max_train_minutes=0.0, frozen_blocks=3, seed=1,
    )  # fmt: skip
    torch.manual_seed(settings.seed)
    start = build_model("resnet18", 2, image_size=32).state_dict()  # what fit builds first
    images, labels = _data()
    trained = fit(images, labels, images[:4], labels[:4], ["a", "b"], settings).state_dict
    assert not torch.equal(trained["conv1.weight"], start["conv1.weight"])
