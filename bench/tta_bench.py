"""Ways of scoring one trained model: zoomed center crops, multi-crop and multi-scale views,
and FixRes (a larger test crop after re-estimating BatchNorm statistics at that size).

For each of `--splits` seeds (the splits of `bench.recipe_bench`), the from-scratch resnet18
(`SCRATCH`) trains `--epochs` on the kept images (or its weights are loaded from `--models`,
where each run saves them), and the same model is scored on the unseen train-stage images and
on the test stage every way in `views()`; all rows of a split compare paired.

    python -m bench.tta_bench --splits 1 --epochs 68 --models /tmp/tta-models

Prints one line per split, then mean and spread per way; its last line reads
`tta_bench: <way> unseen M±S test M±S, ...`.
"""

import copy
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import parse, parser, tagged
from bench.recipe_bench import SCRATCH, _split, _spread, _stage
from clothing_assets.ml.data import load_images
from clothing_assets.ml.devices import amp_dtype_for
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model
from clothing_assets.ml.presets import IMAGENET_MEAN, IMAGENET_STD, ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.train import fit


def _normalize(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((x.float() / 255.0 - m) / s).contiguous(memory_format=torch.channels_last)


def crop_to(side: int, out: int, *, dy: int = 0, dx: int = 0):
    """A view: the `side` square at the center (shifted by dy, dx), resized to `out`."""

    def view(batch: torch.Tensor) -> torch.Tensor:
        h, w = batch.shape[-2:]
        top, left = (h - side) // 2 + dy, (w - side) // 2 + dx
        x = batch[..., top : top + side, left : left + side].float()
        if side != out:
            x = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True,
                              align_corners=False)  # fmt: skip
        return _normalize(x)

    return view


def mirrored(view):
    return lambda batch: view(batch).flip(3)


def with_flips(views: list) -> list:
    return views + [mirrored(v) for v in views]


@torch.inference_mode()
def accuracy(model, images, labels, views) -> float:
    """Top-1 of the mean softmax over `views` of each image."""
    dtype = amp_dtype_for(torch.device("cpu"))
    hits = 0
    for start in range(0, len(images), 128):
        batch = images[start : start + 128]
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            probs = sum(model(v(batch)).float().softmax(1) for v in views)
        hits += int((probs.argmax(1) == labels[start : start + 128]).sum())
    return hits / len(images)


@torch.no_grad()
def refit_batchnorm(model, images, *, size: int, passes: int = 2, augment: bool = True):
    """A copy of `model` whose BatchNorm running statistics are re-estimated (cumulative
    average) on `images` seen at `size`: random-resized crops as in training, or center crops."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    preset = ClassificationPresetTrain(crop_size=size)
    generator = torch.Generator().manual_seed(0)
    center = crop_to(size, size)
    dtype = amp_dtype_for(torch.device("cpu"))
    for _ in range(passes):
        for start in range(0, len(images), 64):
            batch = images[start : start + 64]
            x = preset(batch, generator) if augment else center(batch)
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                model(x)
    return model.eval()


def views(size: int, stored: int) -> dict[str, list]:
    """name -> views of a `stored`-px image for a model trained on `size`-px crops."""
    shift = (stored - size) // 2
    corners = [
        crop_to(size, size, dy=dy, dx=dx) for dy in (-shift, shift) for dx in (-shift, shift)
    ]
    zooms = {f"zoom{s}+flip": with_flips([crop_to(s, size)]) for s in (52, 56, 60, 68, stored)}
    return {
        "crop": [crop_to(size, size)],
        "crop+flip": with_flips([crop_to(size, size)]),
        **zooms,
        "5crop+flip": with_flips([crop_to(size, size), *corners]),
        "scales56-64-73+flip": with_flips(
            [crop_to(56, size), crop_to(size, size), crop_to(stored, size)]
        ),  # fmt: skip
        "scales60-64+flip": with_flips([crop_to(60, size), crop_to(size, size)]),
    }


def main() -> None:
    described = parser(__doc__)
    described.add_argument("--splits", type=int, default=1)
    described.add_argument("--first-split", type=int, default=0)
    described.add_argument("--holdout", type=float, default=0.2)
    described.add_argument("--epochs", type=int, default=68)
    described.add_argument("--fixres", type=int, nargs="*", default=[72, 80])
    described.add_argument("--models", type=Path, default=Path("/tmp/tta-models"))
    args = parse(described)
    # the from-scratch resnet18 these views were measured on (ImageNet normalisation)
    settings = TrainSettings(**SCRATCH, n_epochs=args.epochs, max_train_minutes=0.0)
    size, stored = settings.image_size, cache_size(settings.image_size)
    files, labels, classes = _stage(args.data / "train")
    test_files, test_labels, _ = _stage(args.data / "test", classes)
    sides = sorted({stored, *(cache_size(s) for s in args.fixres)})
    decoded = {s: load_images([str(f) for f in files], s) for s in sides}
    test_decoded = {s: load_images([str(f) for f in test_files], s) for s in sides}
    labels = labels[decoded[stored].kept]
    test_labels = test_labels[test_decoded[stored].kept]
    rel = [str(files[i].relative_to(args.data / "train")) for i in decoded[stored].kept]
    args.models.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, list[float]]] = {}
    for seed in range(args.first_split, args.first_split + args.splits):
        tr, va, unseen = _split(labels, rel, args.holdout, seed, settings.val_fraction)
        images, test_images = decoded[stored].images, test_decoded[stored].images
        model = build_model(settings.architecture, len(classes))
        saved = args.models / f"default-{args.epochs}ep-split{seed}.pt"
        if saved.exists():
            model.load_state_dict(torch.load(saved, weights_only=True))
        else:
            result = fit(images[tr], labels[tr], images[va], labels[va], classes, settings)
            model.load_state_dict(result.state_dict)
            torch.save(result.state_dict, saved)
        model = model.to(memory_format=torch.channels_last).eval()
        ways = {name: (model, images, test_images, v) for name, v in views(size, stored).items()}
        for side in args.fixres:
            at = cache_size(side)
            train_at = decoded[at].images[tr]
            for augment in (True, False):
                refit = refit_batchnorm(model, train_at, size=side, augment=augment)
                tag = "rrc" if augment else "center"
                v = with_flips([crop_to(side, side)])
                ways[f"fixres{side}-bn-{tag}+flip"] = (
                    refit,
                    decoded[at].images,
                    test_decoded[at].images,
                    v,
                )
        line = []
        for name, (m, stored_images, stored_test, v) in ways.items():
            got = scores.setdefault(name, {"unseen": [], "test": []})
            got["unseen"].append(accuracy(m, stored_images[unseen], labels[unseen], v))
            got["test"].append(accuracy(m, stored_test, test_labels, v))
            line.append(f"{name} {got['unseen'][-1]:.3f}/{got['test'][-1]:.3f}")
        print(tagged(f"split {seed}: unseen/test " + ", ".join(line)), flush=True)
    print("\n| way | unseen (mean±sd, %) | test stage (mean±sd, %) |\n|---|---:|---:|")
    for name, got in scores.items():
        print(f"| {name} | {_spread(got['unseen'])} | {_spread(got['test'])} |")
    print(tagged("tta_bench: " + ", ".join(
        f"{n} unseen {_spread(g['unseen'])} test {_spread(g['test'])}"
        for n, g in scores.items())), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
