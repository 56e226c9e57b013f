"""Steady-state training throughput: our path (images decoded once into a uint8 tensor,
augmentation on tensors, channels_last, bf16 autocast where native) and, in the same run, a
seed-style path (PIL decode of every drawn image every epoch, a DataLoader with 4 workers,
fp32), same model, size, batch and optimizer.

    python -m bench.train_bench --arch resnet18 --image-size 128 --steps 20

The last line reads `train_bench: ours A img/s, seed-style B img/s, ratio R` (medians over
--repeats alternated runs of both paths).
"""

import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bench.common import jpegs, parse, parser, tagged
from clothing_assets.ml.data import load_images
from clothing_assets.ml.devices import amp_dtype_for, select_device
from clothing_assets.ml.engine import Recipe, make_optimizer, train_one_epoch, warmup_cosine
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model
from clothing_assets.ml.presets import IMAGENET_MEAN, IMAGENET_STD, ClassificationPresetTrain

WARMUP_STEPS = 3


def _optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return make_optimizer(model, 0.003, 0.05)  # the same (fused) AdamW for both paths


class _Enough(Exception):
    """Raised from the step callback once the timed steps are done."""


def ours(files, labels, args, device) -> float:
    """Decode once (not timed: once per run, 3.9 s for 3,068 images), then time the steps of
    `train_one_epoch` itself, with the data where `fit` keeps it (on the GPU when training on
    one)."""
    decoded = load_images(files, cache_size(args.image_size))
    images, y = decoded.images, labels[decoded.kept]
    if device.type == "cuda":
        images, y = images.to(device), y.to(device)  # GPU-resident, as in fit
    amp = amp_dtype_for(device, "auto")
    torch.manual_seed(0)
    model = build_model(args.arch, 10).to(device, memory_format=torch.channels_last)
    forward = torch.compile(model) if args.compile else model
    opt = _optimizer(model)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(10_000, 0))
    recipe = Recipe(
        preset=ClassificationPresetTrain(crop_size=args.image_size),
        criterion=nn.CrossEntropyLoss(label_smoothing=0.1), batch_size=args.batch_size, seed=0,
        device=device, amp_dtype=amp,
    )  # fmt: skip
    marks: list[float] = []

    def on_step(_batch: int, _n: int) -> None:
        marks.append(0.0)
        if len(marks) in (WARMUP_STEPS, WARMUP_STEPS + args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize()  # only at the two marks: steps otherwise overlap
            marks[-1] = time.perf_counter()
        if len(marks) == WARMUP_STEPS + args.steps:
            raise _Enough

    epoch = 0
    try:
        while True:
            train_one_epoch(
                model, (images, y), opt, recipe, epoch=epoch, scheduler=sched,
                forward=forward, on_step=on_step,
            )  # fmt: skip
            epoch += 1
    except _Enough:
        pass
    return args.steps * args.batch_size / (marks[-1] - marks[WARMUP_STEPS - 1])


class SeedDataset(Dataset):
    """The original workflow's dataset: open and decode the JPEG with PIL on every access."""

    def __init__(self, files, labels, image_size: int) -> None:
        from torchvision import transforms

        self.files, self.labels = files, labels
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("RGB")), self.labels[i]


def seed_style(files, labels, args, device) -> float:
    torch.manual_seed(0)
    model = build_model(args.arch, 10).to(device).train()
    opt = _optimizer(model)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(
        SeedDataset(files, labels.tolist(), args.image_size), batch_size=args.batch_size,
        shuffle=True, num_workers=4, drop_last=True, persistent_workers=True,
        # never fork a parent that has initialised CUDA (ours ran first in this process)
        multiprocessing_context="forkserver" if device.type == "cuda" else None,
    )  # fmt: skip
    step = 0
    while step < WARMUP_STEPS + args.steps:
        for x, y in loader:
            if step == WARMUP_STEPS:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            loss = criterion(model(x.to(device)), y.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == WARMUP_STEPS + args.steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main() -> None:
    described = parser(__doc__)
    described.add_argument("--arch", default="resnet18")
    described.add_argument("--image-size", type=int, default=128)
    described.add_argument("--device", default="auto")
    described.add_argument("--compile", action="store_true", help="torch.compile our model")
    described.add_argument("--steps", type=int, default=20)
    described.add_argument("--repeats", type=int, default=1, help="medians over this many runs")
    described.add_argument("--batch-size", type=int, default=64)
    described.add_argument("--images", type=int, default=1024, help="train-stage images used")
    args = parse(described)

    files = [str(p) for p in jpegs(args.data / "train", args.images)]
    classes = sorted({Path(f).parent.name for f in files})
    labels = torch.tensor([classes.index(Path(f).parent.name) for f in files])
    device = select_device(args.device)
    print(
        f"{len(files)} images, {args.arch} at {args.image_size}px, batch {args.batch_size}, "
        f"{args.steps} timed steps on {device}, torch threads {torch.get_num_threads()}, "
        f"compile {args.compile}"
    )
    amp = amp_dtype_for(device, "auto")
    amp = str(amp).replace("torch.", "") if amp else "float32"
    ours_rates, seed_rates = [], []
    for _ in range(args.repeats):  # alternated, so drifts in the machine hit both alike
        ours_rates.append(ours(files, labels, args, device))
        print(tagged(f"ours: {ours_rates[-1]:.1f} img/s ({amp})"), flush=True)
        seed_rates.append(seed_style(files, labels, args, device))
        print(tagged(f"seed-style: {seed_rates[-1]:.1f} img/s (float32)"), flush=True)
    a, b = statistics.median(ours_rates), statistics.median(seed_rates)
    print(tagged(f"train_bench: ours {a:.1f} img/s, seed-style {b:.1f} img/s, ratio {a / b:.2f}"))


if __name__ == "__main__":
    main()
