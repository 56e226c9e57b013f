"""Decode stage files into uint8 RGB tensors, with a clear error for anything unusable."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, UnidentifiedImageError

with warnings.catch_warnings():
    # torchvision 0.29 announces its decoders' move to TorchCodec; they remain the fastest
    # JPEG path for this torch, so the notice is silenced rather than shown on every run.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
    from torchvision.io import ImageReadMode, decode_jpeg

# Formats the product opens; anything else is rejected before decoding.
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF", "MPO"})
# Handed to Image.open, so that no other format's parser is ever tried on a file (Pillow's JPEG
# parser is the one that opens MPO, multi-picture JPEGs from cameras).
_OPEN_FORMATS = tuple(sorted(SUPPORTED_FORMATS - {"MPO"}))

# Pillow's decompression-bomb guard stays on (Image.MAX_IMAGE_PIXELS, about 89 Mpx). Pillow
# itself only warns between one and two times that limit; decode_image refuses anything over it,
# from the header, before a pixel is decoded or a buffer allocated.


class ImageDecodeError(ValueError):
    """A file that is not a usable image; the message is the one-line ERROR recorded for it."""


class _Header(NamedTuple):
    fmt: str
    mode: str
    width: int
    height: int


def _inspect(data: bytes) -> _Header:
    """The file's format, mode and size from its header, after the format whitelist and the
    decompression-bomb limit; no pixel is decoded. Raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as im:
            header = _Header(im.format, im.mode, im.width, im.height)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not an image in a supported format ({', '.join(_OPEN_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image: {str(exc).splitlines()[0][:200]}") from exc
    if header.fmt not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {header.fmt}")
    limit = Image.MAX_IMAGE_PIXELS
    if limit and header.width * header.height > limit:
        raise ImageDecodeError(
            f"decompression bomb refused: {header.width}x{header.height} pixels exceeds the "
            f"limit of {limit} pixels"
        )
    return header


def _is_plain_jpeg(header: _Header) -> bool:
    """JPEGs libjpeg-turbo and nvJPEG decode straight to RGB (not CMYK or 16-bit ones)."""
    return header.fmt in ("JPEG", "MPO") and header.mode in ("RGB", "L")


def _reducible(header: _Header, side: int | None) -> bool:
    """Whether the image is at least twice `side` each way: then it is reduced as it is
    decoded (see `_decode_with_pillow`) rather than decoded in full and resized."""
    return side is not None and min(header.width // side, header.height // side) >= 2


def _decode_with_pillow(data: bytes, side: int | None = None) -> torch.Tensor:
    """Pillow's decode to RGB. With `side`, a JPEG is decoded at the smallest DCT scale
    (1/2, 1/4, 1/8) still at least `side` each way (Pillow's draft), and any image still
    twice `side` or more is box-reduced by a whole factor at once, so the full-size pixels are
    dropped before the next image is touched."""
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as im:
            if side is not None:
                im.draft(None, (side, side))  # JPEG only; other formats ignore it
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            factor = min(rgb.width // side, rgb.height // side) if side else 1
            if factor >= 2:
                rgb = rgb.reduce(factor)
            return TF.pil_to_tensor(rgb)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image: {str(exc).splitlines()[0][:200]}") from exc


def _jpeg_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_image(data: bytes, *, side: int | None = None) -> torch.Tensor:
    """Decode `data` into a 3xHxW uint8 RGB tensor, or with `side` a 3 x side x side one
    reduced as it is decoded: a JPEG twice `side` or more at a smaller DCT scale, any other
    format by a whole factor right after decoding, its full-size pixels freed before this
    returns (see `_decode_with_pillow`).

    Plain JPEGs go through torchvision's libjpeg-turbo decoder; other formats, unusual JPEG
    modes (CMYK, 16-bit) and large JPEGs to reduce through Pillow. Only SUPPORTED_FORMATS'
    parsers ever see the bytes. Raises ImageDecodeError with a one-line reason.
    """
    return _decode_inspected(data, _inspect(data), side)


def _decode_inspected(data: bytes, header: _Header, side: int | None) -> torch.Tensor:
    """`decode_image` for a file whose header `_inspect` has already passed."""
    image = None
    if _is_plain_jpeg(header) and not _reducible(header, side):
        with contextlib.suppress(RuntimeError):  # libjpeg-turbo refuses some files Pillow reads
            image = decode_jpeg(_jpeg_tensor(data), mode=ImageReadMode.RGB)
    if image is None:
        image = _decode_with_pillow(data, side)
    return image if side is None else resize_square(image, side)


def decode_images(
    blobs: Sequence[bytes], *, device: torch.device | str = "cpu", side: int | None = None
) -> list[torch.Tensor | ImageDecodeError]:
    """Decode many files into 3xHxW uint8 RGB tensors on `device`, each entry the image or
    the ImageDecodeError that names why not; with `side`, each image is reduced to
    side x side as it is decoded (as `decode_image` does), one file at a time, so a batch
    never holds more than one image at full size.

    On CUDA the plain JPEGs are decoded together by torchvision's GPU (nvJPEG) decoder (with
    `side`, only those under twice `side`: larger ones are reduced on the CPU); a batch it
    refuses is decoded file by file, and whatever it cannot do goes through `decode_image` on
    the CPU. Every file passes the same header checks as `decode_image`.
    """
    device = torch.device(device)
    out: list[torch.Tensor | ImageDecodeError | None] = [None] * len(blobs)
    headers: dict[int, _Header] = {}
    for i, data in enumerate(blobs):
        try:
            headers[i] = _inspect(data)
        except ImageDecodeError as exc:
            out[i] = exc
    if device.type == "cuda":
        jpegs = [i for i, h in headers.items() if _is_plain_jpeg(h) and not _reducible(h, side)]
        for i, image in _decode_jpegs_on_gpu([blobs[i] for i in jpegs], device, jpegs):
            out[i] = image if side is None else resize_square(image, side)
    for i, data in enumerate(blobs):
        if out[i] is None:  # headers already checked: decode without parsing them again
            try:
                out[i] = _decode_inspected(data, headers[i], side).to(device)
            except ImageDecodeError as exc:
                out[i] = exc
    return out  # type: ignore[return-value]


def _decode_jpegs_on_gpu(
    blobs: Sequence[bytes], device: torch.device, indices: Sequence[int]
) -> list[tuple[int, torch.Tensor]]:
    """(index, image) of the JPEGs nvJPEG decodes; those it refuses are left out."""
    if not blobs:
        return []
    try:
        decoded = decode_jpeg(
            [_jpeg_tensor(b) for b in blobs], mode=ImageReadMode.RGB, device=device
        )
        return list(zip(indices, decoded, strict=True))
    except RuntimeError:
        out = []
        for i, data in zip(indices, blobs, strict=True):  # one bad file fails the whole batch
            with contextlib.suppress(RuntimeError):  # a refused one is left for the CPU
                image = decode_jpeg(_jpeg_tensor(data), mode=ImageReadMode.RGB, device=device)
                out.append((i, image))
        return out


def cache_size(image_size: int) -> int:
    """The side images are stored at: the crop size over the usual 0.875 crop ratio."""
    return int(math.ceil(image_size * 8 / 7))


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a 3xHxW uint8 image to side x side (antialiased)."""
    return TF.resize(image, [side, side], antialias=True)


def prepare(data: bytes, side: int) -> torch.Tensor:
    """One file as a model receives it: decoded and reduced, as it is decoded, to the side the
    model's images are stored at (`ModelFile.cache_size`), as `scoring.score_batch` does for
    each file of a batch and the server for each request; raises ImageDecodeError. Safe in
    many threads at once."""
    return decode_image(data, side=side)
