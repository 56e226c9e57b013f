"""The networks `fit` builds (ml/models.py): EfficientNet-Lite0 from the ImageNet weights that
its package installs (no download), torchvision's models, and model files that rebuild them."""

from __future__ import annotations

import pytest
import torch

from clothing_assets.ml import models
from clothing_assets.ml.engine import training_amp_dtype
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.presets import IMAGENET_MEAN, IMAGENET_STD
from clothing_assets.ml.settings import TrainSettings


def _packaged_state() -> dict[str, torch.Tensor]:
    return torch.load(models._lite_weights_file("efficientnet_lite0"), weights_only=True)


def test_pretrained_lite0_body_is_the_packaged_imagenet_weights_and_its_head_is_new():
    model = models.build_model("efficientnet_lite0", 7, weights="imagenet", image_size=64)
    packaged, state = _packaged_state(), model.state_dict()
    body = [k for k in packaged if not k.startswith("_fc.")]
    assert len(body) > 200 and all(torch.equal(state[k], packaged[k]) for k in body)
    assert packaged["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].shape == (7, 1280)


def test_lite0_without_weights_is_randomly_initialised():
    model = models.build_model("efficientnet_lite0", 7, weights="none", image_size=64)
    assert not torch.equal(model.state_dict()["_conv_stem.weight"],
                           _packaged_state()["_conv_stem.weight"])  # fmt: skip


@pytest.mark.parametrize("side", [32, 64, 80, 128, 224])
def test_lite0_gives_one_output_per_class_at_the_side_it_is_built_for(side):
    model = models.build_model("efficientnet_lite0", 5, image_size=side).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, side, side)).shape == (2, 5)


@pytest.mark.parametrize(
    ("architecture", "mean", "std"),
    [("efficientnet_lite0", models.LITE_MEAN, models.LITE_STD),
     ("resnet18", IMAGENET_MEAN, IMAGENET_STD),
     ("mobilenet_v3_small", IMAGENET_MEAN, IMAGENET_STD)],
)  # fmt: skip
def test_model_files_carry_the_normalisation_their_architecture_expects(architecture, mean, std):
    assert models.normalization(architecture) == (mean, std)
    settings = TrainSettings(architecture=architecture, image_size=32)
    model_file = ModelFile.of_training({}, ["a", "b"], settings)
    assert (model_file.mean, model_file.std) == (tuple(mean), tuple(std))


def test_a_lite0_model_file_rebuilds_the_same_network():
    """The scorer and the server rebuild the default model from its file alone: same outputs."""
    torch.manual_seed(0)
    model = models.build_model("efficientnet_lite0", 3, weights="imagenet", image_size=64).eval()
    settings = TrainSettings(image_size=64)  # the default architecture
    data = ModelFile.of_training(model.state_dict(), ["a", "b", "c"], settings).to_bytes()
    loaded = ModelFile.load(data)
    rebuilt = loaded.build()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    assert loaded.architecture == "efficientnet_lite0"


@pytest.mark.parametrize(
    ("architecture", "weights", "message"),
    [("resnet1", "none", "unknown architecture 'resnet1'"),
     ("efficientnet_lite0", "imagenet21k", "weights must be one of none, imagenet")],
)  # fmt: skip
def test_build_model_names_what_to_fix(architecture, weights, message):
    with pytest.raises(ValueError, match=message):
        models.build_model(architecture, 3, weights=weights)


def test_the_default_recipe_starts_from_installed_weights():
    """The default job needs no download: its architecture's weights ship with a package."""
    settings = TrainSettings()
    assert settings.weights == "imagenet" and settings.architecture in models.LITE_ARCHITECTURES
    assert models._lite_weights_file(settings.architecture).endswith(".pth")


@pytest.mark.parametrize(
    ("architecture", "kind", "fp32"),
    [("efficientnet_lite0", "AVX512-BF16", True),  # measured: fp32 steps faster than bf16
     ("efficientnet_lite0", "AMX-BF16", True),  # measured: fp32 steps 1.3x bf16's
     ("resnet18", "AVX512-BF16", False)],
)  # fmt: skip
def test_bf16_auto_trains_in_fp32_only_where_fp32_measured_faster(architecture, kind, fp32):
    assert models.trains_faster_in_fp32(architecture, kind) is fp32


@pytest.mark.parametrize("bf16", ["auto", "off"])
def test_lite0_trains_in_fp32_on_an_avx2_cpu(monkeypatch, bf16):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # the kind follows the cap: AVX2
    assert training_amp_dtype(torch.device("cpu"), TrainSettings(bf16=bf16)) is None
