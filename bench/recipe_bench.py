"""Accuracy of training-recipe variants on the shared data, side by side in one run.

Each variant trains with `fit` (the code `trained_model` runs) on the train stage's stratified
90 % (the same split as the asset), keeps its best validation epoch, and is scored on the
test stage against the folder labels.

    python bench/recipe_bench.py --variants default ema mix --epochs 16

Its last line reads `recipe_bench: <variant> val V test T, ...`.
"""

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from clothing_assets.ml.cpu import tagged
from clothing_assets.ml.data import load_images, stratified_split
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.presets import ClassificationPresetEval
from clothing_assets.ml.train import TrainSettings, amp_dtype_for, build_model, evaluate, fit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "clothing-dataset-small"
VARIANTS = {
    "default": {},
    "ema": {"ema_decay": 0.99},
    "mix": {"mixup_alpha": 0.2, "cutmix_alpha": 1.0},
    "ema+mix": {"ema_decay": 0.99, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
    "no-smoothing": {"label_smoothing": 0.0},
}


def _stage(root: Path, classes: list[str] | None = None):
    files = sorted(p for p in root.rglob("*.jpg"))
    classes = classes or sorted({p.parent.name for p in files})
    files = [p for p in files if p.parent.name in classes]
    labels = torch.tensor([classes.index(p.parent.name) for p in files])
    return files, labels, classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["default", "ema", "mix"])
    parser.add_argument("--epochs", type=int, default=TrainSettings.n_epochs)
    parser.add_argument("--arch", default=TrainSettings.architecture)
    parser.add_argument("--image-size", type=int, default=TrainSettings.image_size)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {sorted(VARIANTS)}")

    # every variant trains all --epochs: the comparison is per epoch, not per minute
    base = TrainSettings(
        architecture=args.arch, image_size=args.image_size, n_epochs=args.epochs,
        max_train_minutes=0,
    )  # fmt: skip
    side = cache_size(base.image_size)
    files, labels, classes = _stage(args.data / "train")
    test_files, test_labels, _ = _stage(args.data / "test", classes)
    train = load_images([str(f) for f in files], side)
    test = load_images([str(f) for f in test_files], side)
    labels, test_labels = labels[train.kept], test_labels[test.kept]
    rel = [str(files[i].relative_to(args.data / "train")) for i in train.kept]
    tr, va = stratified_split(rel, labels.tolist(), val_fraction=base.val_fraction)
    tr, va = torch.tensor(tr), torch.tensor(va)
    print(
        f"{len(tr)} train / {len(va)} val / {len(test_labels)} test images, {args.arch} at "
        f"{args.image_size}px, {args.epochs} epochs, torch threads {torch.get_num_threads()}",
        flush=True,
    )
    results = []
    for name in args.variants:
        settings = replace(base, **VARIANTS[name])
        started = time.perf_counter()
        result = fit(train.images[tr], labels[tr], train.images[va], labels[va], classes, settings)
        seconds = time.perf_counter() - started
        model = build_model(settings.architecture, len(classes))
        model.load_state_dict(result.state_dict)
        model = model.to(memory_format=torch.channels_last)
        device = torch.device("cpu")
        _, test_acc, _ = evaluate(
            model, nn.CrossEntropyLoss(), test.images, test_labels,
            preset=ClassificationPresetEval(crop_size=settings.image_size), batch_size=128,
            device=device, amp_dtype=amp_dtype_for(device),
        )  # fmt: skip
        best = max(h.val_acc or 0.0 for h in result.history)
        print(
            tagged(
                f"{name}: best val {best:.3f} (epoch {result.best_epoch}), "
                f"test {test_acc:.3f}, {seconds:.0f}s"
            ),
            flush=True,
        )
        results.append(f"{name} val {best:.3f} test {test_acc:.3f}")
    print(tagged("recipe_bench: " + ", ".join(results)))


if __name__ == "__main__":
    main()
