"""Bad files for the reliability tests, generated on the spot: valid images in every supported
flavour, unusable ones, decompression bombs, and a stage spoiled with all of them."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from clothing_assets_tests.support import CLASSES, COLOURS, write_image


def pixels(colour, size=24, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour) + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid-looking PNG whose header claims width x height RGB pixels; a few bytes long."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def bomb_jpeg(width: int = 30_000, height: int = 30_000) -> bytes:
    """A real small JPEG whose SOF0 header is rewritten to claim width x height."""
    data = bytearray(encode(Image.fromarray(pixels((90, 90, 90))), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def good_variants(colour, seed: int) -> dict[str, bytes]:
    """Decodable images in every supported flavour, dominated by `colour`."""
    rgb = Image.fromarray(pixels(colour, seed=seed))
    sixteen = (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    return {
        "png.png": encode(rgb, "PNG"),
        "gif.gif": encode(rgb.convert("P"), "GIF"),
        "webp.webp": encode(rgb, "WEBP"),
        "gray.jpg": encode(rgb.convert("L"), "JPEG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "rgba.png": encode(rgb.convert("RGBA"), "PNG"),
        "sixteen-bit.png": encode(Image.fromarray(sixteen), "PNG"),
        # a name with spaces, quotes, non-ASCII letters and a semicolon, through DuckDB and Dask
        'it\'s a "quoted" naïve Größe 帽子; name.jpg': encode(rgb, "JPEG"),
    }


def bad_variants(seed: int) -> dict[str, tuple[bytes, str]]:
    """Unusable files, each with the start of the ERROR it must get."""
    jpeg = encode(Image.fromarray(pixels((10, 10, 10), seed=seed)), "JPEG")
    return {
        "zero-bytes.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "corrupt image"),
        "random-bytes.jpg": (np.random.default_rng(seed).bytes(2048), "not an image"),
        "bomb.png": (bomb_png(), "decompression bomb refused"),
        "portable-pixmap.jpg": (encode(Image.fromarray(pixels((1, 2, 3))), "PPM"), "not an image"),
    }


def spoil_stage(root: Path, outside: Path, *, seed: int) -> dict[str, str]:
    """Add good variants to every class and bad files to `root`; return {path: error start}
    for every file that must end up with an ERROR."""
    expected: dict[str, str] = {}
    for c, name in enumerate(CLASSES):
        for file, data in good_variants(COLOURS[name], seed + c).items():
            (root / name / file).write_bytes(data)
    for i, (file, (data, reason)) in enumerate(bad_variants(seed).items()):
        folder = CLASSES[i % len(CLASSES)]
        (root / folder / file).write_bytes(data)
        expected[f"{folder}/{file}"] = reason
    (root / "empty-class").mkdir()
    # a good image outside the stage, reached through a link from inside it
    write_image(outside / f"secret-{seed}.jpg", COLOURS["hat"], seed=seed)
    (root / "hat" / "link-out.jpg").symlink_to(outside / f"secret-{seed}.jpg")
    expected["hat/link-out.jpg"] = "symbolic link leads outside the stage"
    return expected
