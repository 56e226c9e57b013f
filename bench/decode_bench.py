"""JPEG decode speed, one thread: Pillow (the seed's path) against torchvision.io's
libjpeg-turbo decoder (ours), both to a 3xHxW uint8 RGB tensor, and each followed by the
resize to the stored side that training does once per image.

    python -m bench.decode_bench --images 500 --side 147

Files are read into memory first, so only decoding is timed. The last line reads
`decode_bench: pillow A img/s, torchvision B img/s, ratio R` (medians of --repeats).
"""

import io
import warnings

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
    from torchvision.io import ImageReadMode, decode_jpeg

from bench.common import jpegs, median_seconds, parse, parser, tagged
from clothing_assets.ml.images import decode_image, resize_square


def pillow(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        return TF.pil_to_tensor(im.convert("RGB"))


def turbo(data: bytes) -> torch.Tensor:
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def rate(fn, blobs: list[bytes], side: int, repeats: int) -> float:
    """Images per second of `fn` (and the resize to `side`) over `blobs`, median of `repeats`."""

    def run() -> None:
        for data in blobs:
            image = fn(data)
            if side:
                resize_square(image, side)

    return len(blobs) / median_seconds(run, repeats)


def main() -> None:
    described = parser(__doc__)
    described.add_argument("--images", type=int, default=500, help="train-stage JPEGs decoded")
    described.add_argument("--side", type=int, default=147, help="resize side; 0: decode only")
    described.add_argument("--repeats", type=int, default=3)
    args = parse(described)
    torch.set_num_threads(1)
    files = jpegs(args.data / "train", args.images)
    blobs = [f.read_bytes() for f in files]
    assert torch.equal(turbo(blobs[0]), decode_image(blobs[0]))  # ours is what the product runs
    print(f"{len(blobs)} JPEGs, {sum(map(len, blobs)) / len(blobs) / 1024:.0f} KiB on average, "
          f"resize to {args.side or 'none'}, 1 thread")  # fmt: skip
    results = {}
    for name, fn in (
        ("pillow", pillow),
        ("torchvision", turbo),
        ("ours (decode_image)", decode_image),
    ):
        results[name] = rate(fn, blobs, args.side, args.repeats)
        print(tagged(f"{name}: {results[name]:.1f} img/s"), flush=True)
    a, b = results["pillow"], results["torchvision"]
    print(
        tagged(f"decode_bench: pillow {a:.1f} img/s, torchvision {b:.1f} img/s, ratio {b / a:.2f}")
    )


if __name__ == "__main__":
    main()
