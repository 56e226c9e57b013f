"""Decoding image files (ml/images.py): every format to RGB uint8, bad files refused in one line."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from clothing_assets.ml.images import ImageDecodeError, decode_image, decode_images


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


RGB = Image.fromarray(np.full((20, 30, 3), 128, np.uint8))


@pytest.mark.parametrize(
    "data",
    [
        _encode(RGB, "JPEG"),
        _encode(RGB, "PNG"),
        _encode(RGB.convert("L"), "JPEG"),
        _encode(RGB.convert("CMYK"), "JPEG"),
        _encode(RGB.convert("RGBA"), "PNG"),
        _encode(RGB, "WEBP"),
        _encode(RGB.convert("P"), "GIF"),
        _encode(Image.fromarray(np.full((20, 30), 40000, np.uint16)), "PNG"),
    ],
    ids=["jpeg", "png", "gray-jpeg", "cmyk-jpeg", "rgba-png", "webp", "gif", "16-bit-png"],
)
def test_decode_image_gives_rgb_uint8(data):
    image = decode_image(data)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 20, 30)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\x00\x01garbage" * 50, "not an image"),
        (_encode(RGB, "JPEG")[:60], "corrupt image"),
    ],
    ids=["empty", "random-bytes", "truncated-jpeg"],
)
def test_decode_image_rejects_bad_files_with_one_line(data, reason):
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(data)
    assert "\n" not in str(info.value)


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kinds",
    [
        ["jpeg"],
        ["jpeg", "png", "garbage", "jpeg-gray", "empty", "cmyk"],
        ["garbage"],
        [],
    ],
)
def test_decode_images_agrees_with_decode_image_file_by_file(kinds):
    blobs = {
        "jpeg": _encoded("JPEG"),
        "png": _encoded("PNG"),
        "jpeg-gray": _encoded("JPEG", "L"),
        "cmyk": _encoded("JPEG", "CMYK"),
        "garbage": b"not an image at all",
        "empty": b"",
    }
    data = [blobs[k] for k in kinds]
    out = decode_images(data, device="cpu")
    assert len(out) == len(data)
    for blob, got in zip(data, out, strict=True):
        try:
            want = decode_image(blob)
        except ImageDecodeError as exc:
            assert isinstance(got, ImageDecodeError) and str(got) == str(exc)
        else:
            assert isinstance(got, torch.Tensor) and torch.equal(got, want)
            assert got.shape == (3, 20, 30) and got.dtype == torch.uint8
