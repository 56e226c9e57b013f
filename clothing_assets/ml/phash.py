"""A 64-bit DCT perceptual hash of a decoded image: an instance-level signal that tells a
resized, recompressed, slightly cropped or re-encoded copy of an image from another image of
the same kind, where a classifier's embeddings pull a whole class together.

The hash is made from the uint8 image scoring already decoded for the model (no second read):
grayscale (ITU-R 601 luma), resized to 32 x 32 with antialiasing, a 2-D DCT-II as two matrix
products (only the 8 lowest frequencies each way are computed), and one bit per coefficient of
the top-left 8 x 8 block: whether it is above the median of the block's 63 coefficients other
than the DC term (the mean brightness, left out so that it does not move the median; its own
bit is nearly always set). Copies differ in few bits; the Hamming distance between two hashes
is the popcount of their XOR.
Hashes are stored as signed 64-bit integers (BIGINT), the bits' two's-complement reading.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

HASH_SIDE = 32  # the side of the grayscale image the DCT is taken of
LOW = 8  # the lowest frequencies kept each way: LOW * LOW bits
_LUMA = torch.tensor([0.299, 0.587, 0.114])
# bit k of the hash (from the most significant) is coefficient (k // LOW, k % LOW)
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(LOW * LOW - 1, -1, -1, dtype=np.uint64))


def _dct_rows(n: int, rows: int) -> torch.Tensor:
    """The first `rows` rows of the orthonormal n-point DCT-II matrix, float32."""
    k = torch.arange(rows, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    matrix[0] /= math.sqrt(2)
    return matrix.float()


_DCT = _dct_rows(HASH_SIDE, LOW)


def phash_batch(images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
    """The perceptual hashes (int64, one per image) of uint8 RGB images [N, 3, H, W] (or a
    sequence of 3 x H x W ones, each of any size), on whatever device they are."""
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 RGB images [N, 3, H, W], got {tuple(images.shape)}")
        small = _gray_32(images)
    else:
        if not images:
            return np.empty(0, dtype=np.int64)
        small = torch.cat([_gray_32(image.unsqueeze(0)) for image in images])
    low = _DCT @ small @ _DCT.T  # [N, LOW, LOW]
    flat = low.reshape(len(low), -1).numpy()
    median = np.median(flat[:, 1:], axis=1, keepdims=True)
    bits = (flat > median).astype(np.uint64)
    return (bits * _WEIGHTS).sum(axis=1, dtype=np.uint64).view(np.int64)


def _gray_32(images: torch.Tensor) -> torch.Tensor:
    """[N, 32, 32] float32 luma of uint8 RGB images [N, 3, H, W], on the CPU."""
    rgb = images.float()
    gray = (rgb * _LUMA.to(rgb.device)[None, :, None, None]).sum(dim=1, keepdim=True)
    small = F.interpolate(gray, size=(HASH_SIDE, HASH_SIDE), mode="bilinear", antialias=True,
                          align_corners=False)  # fmt: skip
    return small[:, 0].cpu()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The Hamming distances between the 64-bit hashes `a` and `b` (int64 arrays of one shape,
    or broadcastable): the popcount of their XOR, as uint8."""
    xor = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    # as unsigned: numpy counts the bits of a signed integer's absolute value
    return np.bitwise_count(xor.view(np.uint64))


def centre(image: torch.Tensor) -> torch.Tensor:
    """The central 90 % of a [..., H, W] image (5 % off each side): what a copy cropped by
    10 % shows, so that its hash matches this one's."""
    h, w = image.shape[-2:]
    return image[..., h // 20 : h - h // 20, w // 20 : w - w // 20]


def image_hashes(images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """(whole, centre): the perceptual hashes of uint8 RGB images (as `phash_batch` takes
    them) and of their central 90 % (`centre`), the two stored per image."""
    if isinstance(images, torch.Tensor):
        return phash_batch(images), phash_batch(centre(images))
    return phash_batch(images), phash_batch([centre(image) for image in images])
