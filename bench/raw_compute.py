"""Raw training-step throughput of a torchvision model on random tensors, fp32 vs bf16 autocast
(channels_last), to choose the default recipe for a machine. No I/O, no augmentation.

    python -m bench.raw_compute --arch resnet18 --image-size 128 --steps 4 [--compile]

--compile adds bf16 with `torch.compile` (inductor) and prints how long the first, compiling
step took.
"""

import torch
import torchvision

from bench.common import median_seconds, parse, parser, tagged, timed, torch_line


def step_rate(
    arch: str, size: int, batch: int, steps: int, bf16: bool, repeats: int, compile: bool = False
) -> float:
    torch.manual_seed(0)
    model = torchvision.models.get_model(arch, num_classes=10).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    forward = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, size, size).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    _, first = timed(step)
    if compile:
        print(f"  {arch} {size}px: first compiled step {first:.1f}s", flush=True)
    # warm-up: oneDNN picks its kernels on the first calls
    return steps * batch / median_seconds(lambda: [step() for _ in range(steps)], repeats, warmup=1)


def main() -> None:
    described = parser(__doc__, data=False)
    described.add_argument("--arch", nargs="+", default=["resnet18", "resnet50"])
    described.add_argument("--image-size", nargs="+", type=int, default=[128])
    described.add_argument("--batch-size", type=int, default=32)
    described.add_argument("--steps", type=int, default=4)
    described.add_argument("--repeats", type=int, default=3)
    described.add_argument("--compile", action="store_true", help="also bf16 with torch.compile")
    args = parse(described)
    print(torch_line(), flush=True)
    for arch in args.arch:
        for size in args.image_size:
            fp32 = step_rate(arch, size, args.batch_size, args.steps, False, args.repeats)
            bf16 = step_rate(arch, size, args.batch_size, args.steps, True, args.repeats)
            line = (f"raw_compute: {arch} {size}px fp32 {fp32:.1f} img/s, bf16 {bf16:.1f} img/s, "
                    f"ratio {bf16 / fp32:.2f}")  # fmt: skip
            if args.compile:
                compiled = step_rate(
                    arch, size, args.batch_size, args.steps, True, args.repeats, compile=True
                )
                line += f", bf16+compile {compiled:.1f} img/s"
            print(tagged(line))


if __name__ == "__main__":
    main()
