"""Batch transforms on uint8 tensors, like torchvision's classification reference presets."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """0..255 pixels (uint8 or float) to normalised float32, channels_last."""
    m = torch.tensor(mean, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=batch.device).view(1, 3, 1, 1)
    out = (batch.float() / 255.0 - m) / s
    return out.contiguous(memory_format=torch.channels_last)


def crop_params(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box sampling (top, left, h, w), drawing only from `generator`.

    torchvision's own get_params draws from the global RNG; ours makes a resumed run draw
    exactly the crops the uninterrupted run would have drawn.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # fall back to the whole image, as torchvision does (center crop to the ratio bounds)
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side, side


def crop_flip_theta(
    n: int,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip_prob: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Affine matrices (n x 2 x 3, for `F.affine_grid`) that map an output square onto each
    image's random crop box, mirrored with probability `hflip_prob`; CPU-drawn from `generator`."""
    theta = torch.zeros(n, 2, 3)
    for i in range(n):
        top, left, h, w = crop_params(height, width, scale, ratio, generator)
        flip = float(torch.rand((), generator=generator)) < hflip_prob
        # normalised coordinates (align_corners=False): -1 and 1 are the image's outer edges
        theta[i, 0, 0] = (-w if flip else w) / width
        theta[i, 0, 2] = (2 * left + w) / width - 1
        theta[i, 1, 1] = h / height
        theta[i, 1, 2] = (2 * top + h) / height - 1
    return theta


class ClassificationPresetTrain:
    """Random-resized-crop and horizontal flip per image, then normalise the batch.

    The whole batch is resampled at once with `grid_sample`, on whatever device holds it (the
    GPU for a GPU-resident dataset): one kernel instead of one resize per image. Bilinear
    without antialiasing is enough here because the stored images are only 8/7 of the crop
    size (`images.cache_size`), so no crop is ever shrunk by more than that factor.
    """

    def __init__(
        self,
        *,
        crop_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale: tuple[float, float] = (0.25, 1.0),
        hflip_prob: float = 0.5,
    ) -> None:
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(
                f"crop scale {scale} must be fractions of the image's area with "
                "0 < smallest <= largest <= 1 (crop_scale_min)"
            )
        self.crop_size = crop_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.scale = scale
        self.hflip_prob = hflip_prob

    def __call__(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment an NxCxHxW uint8 batch; all randomness comes from `generator` (a CPU one,
        so a run draws the same crops on every device)."""
        n, c, height, width = batch.shape
        theta = crop_flip_theta(
            n, height, width, self.scale, (3 / 4, 4 / 3), self.hflip_prob, generator
        ).to(batch.device)
        grid = F.affine_grid(theta, [n, c, self.crop_size, self.crop_size], align_corners=False)
        out = F.grid_sample(
            batch.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return _normalize(out, self.mean, self.std)


class ClassificationPresetEval:
    """Center-crop the stored image to the model's size and normalise the batch."""

    def __init__(
        self,
        *,
        crop_size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        self.crop_size = crop_size
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return _normalize(TF.center_crop(batch, [self.crop_size]), self.mean, self.std)
