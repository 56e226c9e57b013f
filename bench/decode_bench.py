"""JPEG decode speed, one thread: Pillow (the seed's path) against torchvision.io's
libjpeg-turbo decoder (ours), both to a 3xHxW uint8 RGB tensor, and each followed by the
resize to the stored side that training does once per image.

    python bench/decode_bench.py --images 500 --side 147

Files are read into memory first, so only decoding is timed. The last line reads
`decode_bench: pillow A img/s, torchvision B img/s, ratio R` (medians of --repeats).
"""

import argparse
import io
import statistics
import time
import warnings
from pathlib import Path

import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision.io")
    from torchvision.io import ImageReadMode, decode_jpeg

from clothing_assets.ml.cpu import tagged
from clothing_assets.ml.images import decode_image, resize_square

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STAGE = ROOT.parent / "shared" / "clothing-dataset-small" / "train"


def pillow(data: bytes) -> torch.Tensor:
    with Image.open(io.BytesIO(data)) as im:
        return TF.pil_to_tensor(im.convert("RGB"))


def turbo(data: bytes) -> torch.Tensor:
    return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def rate(fn, blobs: list[bytes], side: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for data in blobs:
            image = fn(data)
            if side:
                resize_square(image, side)
        rates.append(len(blobs) / (time.perf_counter() - start))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--side", type=int, default=147, help="resize side; 0: decode only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stage", type=Path, default=DEFAULT_STAGE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = sorted(args.stage.rglob("*.jpg"))[: args.images]
    if not files:
        raise SystemExit(f"no .jpg files under {args.stage}")
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
