"""What the parts of one training step cost on this machine, besides the network: AdamW's
three implementations and our batched augmentation.

    python -m bench.step_parts --arch resnet18 --image-size 128 --batch-size 64

Prints milliseconds per call, medians of --repeats runs of 10 calls each.
"""

import torch

from bench.common import median_seconds, parse, parser, tagged
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model
from clothing_assets.ml.presets import ClassificationPresetTrain


def per_call_ms(fn, repeats: int, calls: int = 10) -> float:
    """Median milliseconds per call of `fn`, over `repeats` runs of `calls` calls."""
    fn()  # warm-up
    return median_seconds(lambda: [fn() for _ in range(calls)], repeats) / calls * 1000


def main() -> None:
    described = parser(__doc__, data=False)
    described.add_argument("--arch", default="resnet18")
    described.add_argument("--image-size", type=int, default=128)
    described.add_argument("--batch-size", type=int, default=64)
    described.add_argument("--repeats", type=int, default=3)
    args = parse(described)
    model = build_model(args.arch, 10)
    for param in model.parameters():
        param.grad = torch.randn_like(param)
    for name, kwargs in (("for-loop", {"foreach": False}), ("foreach", {"foreach": True}),
                         ("fused", {"fused": True})):  # fmt: skip
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05, **kwargs)
        print(
            tagged(f"AdamW {name}: {per_call_ms(opt.step, args.repeats):.1f} ms/step"), flush=True
        )
    side = cache_size(args.image_size)
    batch = torch.randint(0, 256, (args.batch_size, 3, side, side), dtype=torch.uint8)
    preset = ClassificationPresetTrain(crop_size=args.image_size)
    gen = torch.Generator().manual_seed(0)
    ms = per_call_ms(lambda: preset(batch, gen), args.repeats)
    print(
        tagged(
            f"augmentation ({args.batch_size} images, {side} -> {args.image_size} px): {ms:.1f} ms"
        )
    )


if __name__ == "__main__":
    main()
