"""The perceptual hash of a decoded image: a resized, recompressed, 10 %-cropped or re-encoded
copy of a small textured image stays within MAX_HAMMING bits (through the centre hash for the
crop), a different image does not, and the Hamming distance reads all 64 bits of a signed
BIGINT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clothing_assets.ml.duplicates import MAX_HAMMING, hash_distances
from clothing_assets.ml.images import prepare
from clothing_assets.ml.phash import hamming, image_hashes, phash_batch
from clothing_assets_tests.support.planted import COPY_KINDS, copy_of, garment_jpeg

SIDE = 74  # the decode side of a 64-px model (`images.cache_size`), as scoring decodes


def _hashes(datas: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    return image_hashes(torch.stack([prepare(d, SIDE) for d in datas]))


def _distance(a: bytes, b: bytes) -> int:
    whole, centre = _hashes([a, b])
    return int(hash_distances(whole, centre, np.array([0]), np.array([1]))[0])


@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize("kind", COPY_KINDS)
def test_a_copy_is_within_max_hamming(kind, seed):
    original = garment_jpeg("dress", seed, size=96, class_colour=False)
    assert _distance(original, copy_of(original, kind)) <= MAX_HAMMING


@pytest.mark.parametrize(("name", "other"), [("dress", "dress"), ("hat", "shoes")])
def test_a_different_image_is_not(name, other):
    # the same class and colour scheme, or another: only the instance tells them apart
    a = garment_jpeg(name, 5, size=96, class_colour=True)
    b = garment_jpeg(other, 6, size=96, class_colour=True)
    assert _distance(a, b) > MAX_HAMMING


def test_the_crop_matches_through_the_centre_hash():
    original = garment_jpeg("pants", 7, size=96, class_colour=False)
    whole, centre = _hashes([original, copy_of(original, "crop10")])
    assert hamming(centre[0], whole[1]) < hamming(whole[0], whole[1])


def test_a_batch_and_images_one_by_one_hash_alike_and_brightness_is_ignored():
    images = torch.stack([prepare(garment_jpeg("hat", s, size=96), SIDE) for s in range(3)])
    assert phash_batch(images).tolist() == phash_batch(list(images)).tolist()
    assert phash_batch(images).dtype == np.int64
    brighter = (images.int() + 12).clamp(0, 255).to(torch.uint8)
    assert (hamming(phash_batch(images), phash_batch(brighter)) <= 2).all()
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        phash_batch(images[:, :1])


def test_hamming_counts_every_bit_of_a_signed_64_bit_hash():
    low, high = np.int64(-(2**63)), np.int64(2**63 - 1)
    assert hamming(np.array([low, -1, 5]), np.array([high, 0, 6])).tolist() == [64, 64, 2]
