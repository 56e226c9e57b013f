"""Decode stage files into uint8 RGB tensors, with a clear error for anything unusable."""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from collections.abc import Sequence

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


def _inspect(data: bytes) -> tuple[str, str]:
    """(format, mode) from the file's header, after the format whitelist and the
    decompression-bomb limit; no pixel is decoded. Raises ImageDecodeError."""
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as im:
            fmt, mode, width, height = im.format, im.mode, im.width, im.height
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not an image in a supported format ({', '.join(_OPEN_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image: {str(exc).splitlines()[0][:200]}") from exc
    if fmt not in SUPPORTED_FORMATS:
        raise ImageDecodeError(f"unsupported image format {fmt}")
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageDecodeError(
            f"decompression bomb refused: {width}x{height} pixels exceeds the limit of "
            f"{limit} pixels"
        )
    return fmt, mode


def _is_plain_jpeg(fmt: str, mode: str) -> bool:
    """JPEGs libjpeg-turbo and nvJPEG decode straight to RGB (not CMYK or 16-bit ones)."""
    return fmt in ("JPEG", "MPO") and mode in ("RGB", "L")


def _decode_with_pillow(data: bytes) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as im:
            rgb = im.convert("RGB")
            rgb.load()
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image: {str(exc).splitlines()[0][:200]}") from exc
    return TF.pil_to_tensor(rgb)


def _jpeg_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def decode_image(data: bytes) -> torch.Tensor:
    """Decode `data` into a 3xHxW uint8 RGB tensor.

    JPEGs go through torchvision's libjpeg-turbo decoder; other formats and unusual JPEG modes
    (CMYK, 16-bit) through Pillow. Only SUPPORTED_FORMATS' parsers ever see the bytes. Raises
    ImageDecodeError with a one-line reason.
    """
    return _decode_inspected(data, *_inspect(data))


def _decode_inspected(data: bytes, fmt: str, mode: str) -> torch.Tensor:
    """`decode_image` for a file whose header `_inspect` has already passed."""
    if _is_plain_jpeg(fmt, mode):
        try:
            return decode_jpeg(_jpeg_tensor(data), mode=ImageReadMode.RGB)
        except RuntimeError:
            pass  # libjpeg-turbo refuses some files Pillow can still read
    return _decode_with_pillow(data)


def decode_images(
    blobs: Sequence[bytes], *, device: torch.device | str = "cpu"
) -> list[torch.Tensor | ImageDecodeError]:
    """Decode many files at once into 3xHxW uint8 RGB tensors on `device`, each entry the image
    or the ImageDecodeError that names why not.

    On CUDA the plain JPEGs are decoded together by torchvision's GPU (nvJPEG) decoder; a
    batch it refuses is decoded file by file, and whatever it cannot do goes through
    `decode_image` on the CPU. Every file passes the same header checks as `decode_image`.
    """
    device = torch.device(device)
    out: list[torch.Tensor | ImageDecodeError | None] = [None] * len(blobs)
    headers: dict[int, tuple[str, str]] = {}
    jpegs: list[int] = []
    for i, data in enumerate(blobs):
        try:
            headers[i] = _inspect(data)
        except ImageDecodeError as exc:
            out[i] = exc
            continue
        if device.type == "cuda" and _is_plain_jpeg(*headers[i]):
            jpegs.append(i)
    if jpegs:
        try:
            decoded = decode_jpeg(
                [_jpeg_tensor(blobs[i]) for i in jpegs], mode=ImageReadMode.RGB, device=device
            )
            for i, image in zip(jpegs, decoded, strict=True):
                out[i] = image
        except RuntimeError:
            for i in jpegs:  # one bad file fails the whole GPU batch: go one by one
                with contextlib.suppress(RuntimeError):  # a refused one is left for the CPU
                    out[i] = decode_jpeg(
                        _jpeg_tensor(blobs[i]), mode=ImageReadMode.RGB, device=device
                    )
    for i, data in enumerate(blobs):
        if out[i] is None:  # headers already checked: decode without parsing them again
            try:
                out[i] = _decode_inspected(data, *headers[i]).to(device)
            except ImageDecodeError as exc:
                out[i] = exc
    return out  # type: ignore[return-value]


def cache_size(image_size: int) -> int:
    """The side images are stored at: the crop size over the usual 0.875 crop ratio."""
    return int(math.ceil(image_size * 8 / 7))


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a 3xHxW uint8 image to side x side (antialiased)."""
    return TF.resize(image, [side, side], antialias=True)
