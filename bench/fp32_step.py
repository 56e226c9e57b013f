"""fp32 training-step throughput by memory format and batch size, to pick the fastest fp32 path
on a CPU without native bf16 (the AVX2 kind). Random tensors, AdamW (fused), no augmentation;
the variants alternate `--repeats` times in one run and medians are printed. `--bf16` adds
the channels_last step under bf16 autocast, to check where bf16 pays for an architecture.

    python -m bench.fp32_step --arch resnet18 --image-size 64 --batch-sizes 32 64 128
    python -m bench.fp32_step --arch efficientnet_lite0 --image-size 128 --batch-sizes 64 --bf16
    python -m bench.fp32_step --cpu-kind AVX2 --arch efficientnet_lite0 --image-size 128

Its last line reads `fp32_step: <format> b<batch> <img/s>, ...` tagged with the CPU kind.
"""

import statistics

import torch

from bench.common import parse, parser, tagged, timed, torch_line
from clothing_assets.ml.models import build_model

FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def make_step(arch: str, size: int, batch: int, fmt: torch.memory_format, bf16: bool = False):
    """A closure running one training step of `arch` on a fixed random batch (fp32, or under
    bf16 autocast)."""
    torch.manual_seed(0)
    model = build_model(arch, 10, image_size=size).to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    step()  # warm-up: oneDNN picks its kernels on the first calls
    return step


def main() -> None:
    described = parser(__doc__, data=False)
    described.add_argument("--arch", default="resnet18")
    described.add_argument("--image-size", type=int, default=64)
    described.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    described.add_argument("--images", type=int, default=512, help="images per timed repeat")
    described.add_argument("--repeats", type=int, default=3)
    described.add_argument("--bf16", action="store_true", help="also channels_last under bf16")
    args = parse(described)
    print(torch_line(), flush=True)
    steps = {
        (name, b): make_step(args.arch, args.image_size, b, fmt)
        for name, fmt in FORMATS.items()
        for b in args.batch_sizes
    }
    if args.bf16:
        for b in args.batch_sizes:
            steps[("bf16-channels_last", b)] = make_step(
                args.arch, args.image_size, b, torch.channels_last, bf16=True
            )
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for _ in range(args.repeats):
        for (name, b), step in steps.items():
            n = max(1, args.images // b)
            _, seconds = timed(lambda step=step, n=n: [step() for _ in range(n)])
            rates[(name, b)].append(n * b / seconds)
    medians = [f"{name} b{b} {statistics.median(r):.1f} img/s" for (name, b), r in rates.items()]
    print(tagged(f"fp32_step: {args.arch} {args.image_size}px, " + ", ".join(medians)))


if __name__ == "__main__":
    main()
