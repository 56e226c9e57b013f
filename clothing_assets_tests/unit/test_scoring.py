"""Classifying decoded images (ml/scoring.py, classify), the path shared by the batch scorer
and the model server."""

from __future__ import annotations

import pytest
import torch

from clothing_assets.ml.models import build_model
from clothing_assets.ml.presets import (
    ClassificationPresetEval,
)


@pytest.mark.parametrize("eval_flip", [False, True])
def test_classify_averages_an_image_and_its_mirror_when_the_model_says_so(eval_flip):
    """With the model's eval_flip, a probability is the mean over the image and its mirror,
    so an image and its mirror get the same answer; without it, the image alone."""
    from clothing_assets.ml.model_file import ModelFile
    from clothing_assets.ml.scoring import classify
    from clothing_assets.ml.settings import TrainSettings

    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    # 28 px crops of 32 px images: a centred crop with equal margins, so the crop of a mirror
    # image is the mirror of the crop
    settings = TrainSettings(architecture="resnet18", image_size=28, eval_flip=eval_flip)
    model_file = ModelFile.of_training(model.state_dict(), ["a", "b", "c"], settings)
    assert model_file.eval_flip is eval_flip
    side = model_file.cache_size
    images = [torch.randint(0, 256, (3, side, side), dtype=torch.uint8) for _ in range(3)]
    mirrors = [image.flip(2) for image in images]
    cpu = torch.device("cpu")
    probs = classify(model, model_file, images, cpu, None)
    mirrored = classify(model, model_file, mirrors, cpu, None)
    preset = ClassificationPresetEval(crop_size=28)
    with torch.inference_mode():
        one = model(preset(torch.stack(images))).softmax(1)
        other = model(preset(torch.stack(mirrors))).softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    if eval_flip:
        torch.testing.assert_close(probs, (one + other) / 2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(probs, mirrored, rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(probs, one, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(probs, mirrored, atol=1e-4)  # a random net is not symmetric
