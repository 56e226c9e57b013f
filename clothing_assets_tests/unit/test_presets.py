"""Training and evaluation presets (ml/presets.py): batched random-resized crops that sample
where torchvision's do, stay inside the image and cover the smallest area asked for."""

from __future__ import annotations

import pytest
import torch

from clothing_assets.ml.images import cache_size
from clothing_assets.ml.presets import (
    ClassificationPresetEval,
    ClassificationPresetTrain,
    crop_flip_theta,
    crop_params,
)


@pytest.mark.parametrize("image_size", [32, 128, 224])
def test_presets_give_normalized_channels_last_batches(image_size):
    side = cache_size(image_size)
    batch = torch.randint(0, 256, (4, 3, side, side), dtype=torch.uint8)
    train = ClassificationPresetTrain(crop_size=image_size)(batch, torch.Generator().manual_seed(0))
    again = ClassificationPresetTrain(crop_size=image_size)(batch, torch.Generator().manual_seed(0))
    evaluated = ClassificationPresetEval(crop_size=image_size)(batch)
    for out in (train, evaluated):
        assert out.shape == (4, 3, image_size, image_size) and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(train, again)  # augmentation depends only on the generator


@pytest.mark.parametrize(
    ("side", "crop", "flip"), [(147, 128, False), (147, 128, True), (64, 32, False)]
)
def test_batched_crop_matches_torchvision_resized_crop(side, crop, flip):
    """The one-kernel crop samples exactly where torchvision's crop-then-resize does (inside
    the box; at its edge grid_sample may read the neighbouring pixel instead of repeating)."""
    import torchvision.transforms.v2.functional as TF

    batch = torch.randint(0, 256, (6, 3, side, side), dtype=torch.uint8)
    preset = ClassificationPresetTrain(
        crop_size=crop, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255),
        hflip_prob=1.0 if flip else 0.0,
    )  # fmt: skip
    out = preset(batch, torch.Generator().manual_seed(3))
    boxes = torch.Generator().manual_seed(3)
    for image, got in zip(batch, out, strict=True):
        top, left, h, w = crop_params(side, side, preset.scale, (3 / 4, 4 / 3), boxes)
        torch.rand((), generator=boxes)  # the flip draw
        want = TF.resized_crop(image.float(), top, left, h, w, [crop, crop], antialias=False)
        if flip:
            want = TF.horizontal_flip(want)
        assert torch.allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-2)


@pytest.mark.parametrize("smallest", [0.25, 0.5, 0.9])
def test_random_crops_cover_at_least_the_smallest_area(smallest):
    gen = torch.Generator().manual_seed(2)
    preset = ClassificationPresetTrain(crop_size=32, scale=(smallest, 1.0))
    for _ in range(50):
        _top, _left, h, w = crop_params(100, 100, preset.scale, (3 / 4, 4 / 3), gen)
        # crop_params rounds each side, so the area may fall short by about one pixel row
        assert h * w >= smallest * 100 * 100 - 2 * 100


@pytest.mark.parametrize("scale", [(0.0, 1.0), (0.6, 0.5), (0.5, 1.5), (-0.1, 1.0)])
def test_a_crop_scale_outside_the_image_is_refused(scale):
    with pytest.raises(ValueError, match="crop_scale_min"):
        ClassificationPresetTrain(crop_size=32, scale=scale)


def test_crop_flip_theta_identity_box():
    """A whole-image box without flip is the identity matrix; with flip, x is mirrored."""
    theta = crop_flip_theta(1, 10, 10, (1.0, 1.0), (1.0, 1.0), 0.0, torch.Generator())
    assert torch.allclose(theta[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    theta = crop_flip_theta(1, 10, 10, (1.0, 1.0), (1.0, 1.0), 1.0, torch.Generator())
    assert torch.allclose(theta[0], torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]))


@pytest.mark.parametrize(("h", "w"), [(147, 147), (40, 300), (10, 10)])
def test_crop_params_stay_inside_the_image(h, w):
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        top, left, ch, cw = crop_params(h, w, (0.25, 1.0), (3 / 4, 4 / 3), gen)
        assert top >= 0 and left >= 0 and top + ch <= h and left + cw <= w and ch > 0 and cw > 0
