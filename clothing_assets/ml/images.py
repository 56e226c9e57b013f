"""Decode stage files into uint8 RGB tensors, with a clear error for anything unusable."""

from __future__ import annotations

import io
import math
import warnings

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


def decode_image(data: bytes) -> torch.Tensor:
    """Decode `data` into a 3xHxW uint8 RGB tensor.

    JPEGs go through torchvision's libjpeg-turbo decoder; other formats and unusual JPEG modes
    (CMYK, 16-bit) through Pillow. Only SUPPORTED_FORMATS' parsers ever see the bytes. Raises
    ImageDecodeError with a one-line reason.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=_OPEN_FORMATS) as im:
            fmt, mode = im.format, im.mode
            if fmt not in SUPPORTED_FORMATS:
                raise ImageDecodeError(f"unsupported image format {fmt}")
            limit = Image.MAX_IMAGE_PIXELS
            if limit and im.width * im.height > limit:
                raise ImageDecodeError(
                    f"decompression bomb refused: {im.width}x{im.height} pixels exceeds the "
                    f"limit of {limit} pixels"
                )
            if fmt in ("JPEG", "MPO") and mode in ("RGB", "L"):
                try:
                    return decode_jpeg(
                        torch.frombuffer(bytearray(data), dtype=torch.uint8),
                        mode=ImageReadMode.RGB,
                    )
                except RuntimeError:
                    pass  # libjpeg-turbo refuses some files Pillow can still read
            im.seek(0)
            rgb = im.convert("RGB")
            rgb.load()
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"not an image in a supported format ({', '.join(_OPEN_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"corrupt image: {str(exc).splitlines()[0][:200]}") from exc
    return TF.pil_to_tensor(rgb)


def cache_size(image_size: int) -> int:
    """The side images are stored at: the crop size over the usual 0.875 crop ratio."""
    return int(math.ceil(image_size * 8 / 7))


def resize_square(image: torch.Tensor, side: int) -> torch.Tensor:
    """Resize a 3xHxW uint8 image to side x side (antialiased)."""
    return TF.resize(image, [side, side], antialias=True)
