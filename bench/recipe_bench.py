"""Accuracy of training recipes at an equal wall-clock budget, over repeated stratified splits.

For each of `--splits` seeds, every class of the train stage is shuffled and `--holdout` of
it set aside as unseen images. Each recipe trains with `fit` (the code `trained_model` runs,
with its own stratified validation split and best-epoch choice) on the rest, within
`--minutes` of training, and the kept model is scored on the unseen images and on the test
stage, once per way of evaluating (`EVALS`: the stored image center-cropped to the training
size, as the scorer does, or whole; each with and without a horizontally flipped second
view). Every evaluation of one split scores the same trained model, so they compare paired.

    python -m bench.recipe_bench --recipes default lowres --splits 3 --minutes 8

With `--minutes 0` the runs are compared at equal compute instead, which a shared machine
cannot disturb: each recipe trains `--epochs` scaled by its pixels per crop against its
family's crop ((ref / side)^2 epochs at `side` px, rounded; ref is 128 px, the default's, for
the pretrained recipes and 64 px, `scratch`'s, for those from random initialisation, so that
the commands in BENCHMARKS.md, Recipes train what their figures measured).

With `--plan-first`, each recipe's epochs for `--minutes` are planned once, before any
training, the way `trained_model` plans them (a few timed steps on a copy of the model, on the
first split's data), and every split then trains that fixed number: an equal wall-clock budget
across architectures, measured while the machine is quiet, and training that later load
cannot skew. The plans are printed first.

Prints one line per split and recipe, then a table of mean and spread (sample standard
deviation over splits) per recipe and evaluation; its last line reads
`recipe_bench: <recipe>/<eval> unseen M±S test M±S, ...`.
"""

import copy
import statistics
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch

from bench.common import jpegs, parse, parser, tagged, timed
from clothing_assets.ml.data import load_images, stratified_split
from clothing_assets.ml.devices import amp_dtype_for
from clothing_assets.ml.engine import Recipe, epoch_batches, training_amp_dtype
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model, freeze_early_layers, normalization
from clothing_assets.ml.presets import ClassificationPresetEval, ClassificationPresetTrain
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.throughput import measure_throughput, plan_training
from clothing_assets.ml.train import fit

# resnet18 from random initialisation at 64 px: the from-scratch baseline (BENCHMARKS.md, Recipes)
SCRATCH = {"architecture": "resnet18", "weights": "none", "image_size": 64, "base_lr": 0.003,
           "crop_scale_min": 0.0}  # fmt: skip
RECIPES = {
    # EfficientNet-Lite0 fine-tuned from the ImageNet weights its package installs, at 128 px
    "default": {},
    "lite160": {"image_size": 160},
    "lite96": {"image_size": 96},
    "lite-scale50": {"crop_scale_min": 0.5},
    "lite-lr2": {"base_lr": 0.002},
    "lite-lr3": {"base_lr": 0.003},
    # how many early blocks keep their ImageNet weights (the default freezes 5)
    "lite-freeze0": {"frozen_blocks": 0},
    "lite-freeze3": {"frozen_blocks": 3},
    "lite-freeze8": {"frozen_blocks": 8},
    # the recipes below vary the from-scratch resnet18 (SCRATCH) and compare against it
    "scratch": SCRATCH,
    # smaller crops cost (112/128)^2 = 0.77 of a step: more epochs fit in the same budget
    "lowres": {**SCRATCH, "image_size": 112},
    "128px": {**SCRATCH, "image_size": 128},
    "96px": {**SCRATCH, "image_size": 96},
    "80px": {**SCRATCH, "image_size": 80},
    "64px": {**SCRATCH, "image_size": 64},
    # below SCRATCH's 64 px: 64 px matched 128 px at equal epochs (BENCHMARKS.md, Recipes), so
    # fewer pixels may lose little detail and buy epochs; give `--epochs` so the scaled count is
    # the plan
    "56px": {**SCRATCH, "image_size": 56},
    "48px": {**SCRATCH, "image_size": 48},
    # 43 steps an epoch at 64 images: twice the optimizer steps for the same images
    "bs32": {**SCRATCH, "batch_size": 32},
    "ema": {**SCRATCH, "ema_decay": 0.99},
    "ema998": {**SCRATCH, "ema_decay": 0.998},
    "mix": {**SCRATCH, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
    # at 68 epochs train accuracy (0.88) ends above validation (0.81): regularise more
    "cutmix": {**SCRATCH, "cutmix_alpha": 1.0},
    "wd01": {**SCRATCH, "weight_decay": 0.1},
    # ... and CutMix lost 4 points at 68 epochs (BENCHMARKS.md, Recipes): try milder crops
    "scale50": {**SCRATCH, "crop_scale_min": 0.5},
    "scale35": {**SCRATCH, "crop_scale_min": 0.35},
    "wd002": {**SCRATCH, "weight_decay": 0.02},
    "no-smoothing": {**SCRATCH, "label_smoothing": 0.0},
    # CIFAR-style SGD for a ResNet from scratch: lr 0.1 per 128 images, L2 5e-4
    "sgd": {**SCRATCH, "optimizer": "sgd", "base_lr": 0.05, "weight_decay": 5e-4},
    # other torchvision families: regnet_y_400mf planned at 2.3x (64 px) and 1.4x (80 px)
    # resnet18's 64 px training img/s on a 2-core AVX2 EPYC (fp32, BENCHMARKS.md, Recipes), so
    # a budget buys that many more epochs; the 800mf ones are untried
    # deeper at the same 64 px: 179 against resnet18's 294 img/s on AMX-BF16 (BENCHMARKS.md,
    # Recipes), so an equal budget is 0.61 of resnet18's epochs (`--epochs` is not scaled for depth)
    "resnet34": {**SCRATCH, "architecture": "resnet34"},
    "regnety400": {**SCRATCH, "architecture": "regnet_y_400mf"},
    "regnety400-80": {**SCRATCH, "architecture": "regnet_y_400mf", "image_size": 80},
    "regnety800-80": {**SCRATCH, "architecture": "regnet_y_800mf", "image_size": 80},
    "regnetx800": {**SCRATCH, "architecture": "regnet_x_800mf"},
}


def reference_side(settings: TrainSettings) -> int:
    """The crop side a recipe's family is compared at: `scratch`'s for recipes trained from
    random initialisation, the default's for pretrained ones."""
    return SCRATCH["image_size"] if settings.weights == "none" else TrainSettings.image_size


# name -> (evaluate the whole stored image rather than the center crop, add a flipped view)
EVALS = {"crop": (False, False), "crop+flip": (False, True), "full": (True, False),
         "full+flip": (True, True)}  # fmt: skip


def _stage(root: Path, classes: list[str] | None = None):
    files = jpegs(root)
    classes = classes or sorted({p.parent.name for p in files})
    files = [p for p in files if p.parent.name in classes]
    labels = torch.tensor([classes.index(p.parent.name) for p in files])
    return files, labels, classes


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[list, list]:
    """(kept, unseen) indices: per class, a seeded shuffle and its first `fraction` unseen."""
    generator = torch.Generator().manual_seed(seed)
    kept, unseen = [], []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)].tolist()
        cut = round(fraction * len(members))
        unseen += members[:cut]
        kept += members[cut:]
    return sorted(kept), sorted(unseen)


@torch.inference_mode()
def accuracy(model, images, labels, *, crop: int | None, flip: bool, architecture: str) -> float:
    """Top-1 accuracy; `crop`: center-crop side (None: the whole image); `flip`: mean of the
    softmax over the image and its mirror; normalised as `architecture` expects."""
    mean, std = normalization(architecture)
    preset = ClassificationPresetEval(crop_size=crop or images.shape[-1], mean=mean, std=std)
    device = torch.device("cpu")
    hits = 0
    for start in range(0, len(images), 128):
        x = preset(images[start : start + 128])
        with torch.autocast("cpu", dtype=amp_dtype_for(device) or torch.float32,
                            enabled=amp_dtype_for(device) is not None):  # fmt: skip
            probs = model(x).float().softmax(1)
            if flip:
                probs += model(x.flip(3)).float().softmax(1)
        hits += int((probs.argmax(1) == labels[start : start + 128]).sum())
    return hits / len(images)


@torch.no_grad()
def refit_batchnorm(model, images, *, crop: int, architecture: str) -> torch.nn.Module:
    """A copy of `model` whose BatchNorm statistics are re-estimated (`update_bn`, a cumulative
    mean) on `images` center-cropped to `crop` as the scorer prepares them."""
    mean, std = normalization(architecture)
    preset = ClassificationPresetEval(crop_size=crop, mean=mean, std=std)
    refit = copy.deepcopy(model)
    batches = (preset(images[start : start + 128]).contiguous(memory_format=torch.channels_last)
               for start in range(0, len(images), 128))  # fmt: skip
    torch.optim.swa_utils.update_bn(batches, refit)
    return refit.eval()


def _spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f}±{100 * sd:.1f}"


def _split(labels: torch.Tensor, rel: list[str], holdout: float, seed: int, val_fraction: float):
    """(train, validation, unseen) indices of one split seed."""
    kept, unseen = holdout_split(labels, holdout, seed)
    tr, va = stratified_split([rel[i] for i in kept], labels[kept].tolist(),
                              val_fraction=val_fraction)  # fmt: skip
    return torch.tensor(kept)[tr], torch.tensor(kept)[va], unseen


def _plan_first(recipes, decoded, labels, rel, classes, holdout) -> dict[str, TrainSettings]:
    """Each recipe with its budget turned into a fixed `n_epochs` (and no budget), planned as
    `fit` plans, on split 0's data; one line per plan."""
    device = torch.device("cpu")
    planned = {}
    for name, settings in recipes.items():
        tr, va, _ = _split(labels, rel, holdout, 0, settings.val_fraction)
        images = decoded[cache_size(settings.image_size)].images
        model = build_model(settings.architecture, len(classes), image_size=settings.image_size)
        if settings.weights != "none":
            freeze_early_layers(model, settings.frozen_blocks)  # as `fit` freezes them
        preset = ClassificationPresetTrain(
            crop_size=settings.image_size, scale=(settings.crop_scale_for(settings.n_epochs), 1.0)
        )  # the crops of the longest plan, as `fit` times its steps
        recipe = Recipe.of(
            settings, preset, num_classes=len(classes), device=device,
            amp_dtype=training_amp_dtype(device, settings),
        )  # fmt: skip
        measure = partial(
            measure_throughput, model.to(memory_format=torch.channels_last),
            (images[tr], labels[tr]), (images[va], labels[va]), recipe, settings=settings,
        )  # fmt: skip
        steps = len(epoch_batches(len(tr), settings.batch_size, seed=0, epoch=0))
        plan = plan_training(None, settings, steps_per_epoch=steps, n_val=len(va), measure=measure)
        print(tagged(f"plan {name}: {plan.describe()}"), flush=True)
        planned[name] = replace(settings, n_epochs=plan.epochs, max_train_minutes=0.0)
    return planned


def main() -> None:
    described = parser(__doc__)
    described.add_argument("--recipes", nargs="+", default=["default", "lowres"])
    described.add_argument("--splits", type=int, default=3)
    described.add_argument("--holdout", type=float, default=0.2)
    described.add_argument("--minutes", type=float, default=TrainSettings.max_train_minutes)
    described.add_argument("--epochs", type=int, default=TrainSettings.n_epochs, help="at most")
    described.add_argument(
        "--plan-first",
        action="store_true",
        help="plan each recipe's epochs for --minutes up front, then train them",
    )
    described.add_argument(
        "--eval-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also score each model center-cropped at these sides (with the flip), from the "
        "images stored for that side: evaluation above the training crop (FixRes)",
    )
    described.add_argument(
        "--refit-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also score each model center-cropped at these sides (with the flip) after "
        "re-estimating its BatchNorm statistics on its training images prepared that way "
        "(FixRes's test-size correction, without re-training any weight)",
    )
    described.add_argument(
        "--first-split", type=int, default=0,
        help="the first split seed (to add splits to a run that measured the lower seeds)",
    )  # fmt: skip
    args = parse(described)
    unknown = set(args.recipes) - set(RECIPES)
    if args.plan_first and not args.minutes:
        raise SystemExit("--plan-first plans a --minutes budget; give one above 0")
    if unknown:
        raise SystemExit(f"unknown recipes {sorted(unknown)}; known: {sorted(RECIPES)}")

    base = TrainSettings(n_epochs=args.epochs, max_train_minutes=args.minutes)
    recipes = {name: replace(base, **RECIPES[name]) for name in args.recipes}
    if not args.minutes:  # equal compute: epochs in proportion to the crop's pixels
        recipes = {
            name: replace(s, n_epochs=round(args.epochs * (reference_side(s) / s.image_size) ** 2))
            for name, s in recipes.items()
        }
    files, labels, classes = _stage(args.data / "train")
    test_files, test_labels, _ = _stage(args.data / "test", classes)
    decoded, test_decoded = {}, {}
    sides = {cache_size(side) for s in recipes.values()
             for side in (s.image_size, reference_side(s))}  # fmt: skip
    sides |= {cache_size(side) for side in [*args.eval_sizes, *args.refit_sizes]}
    for side in sorted(sides):
        decoded[side] = load_images([str(f) for f in files], side)
        test_decoded[side] = load_images([str(f) for f in test_files], side)
    some = next(iter(decoded.values()))
    labels, test_labels = labels[some.kept], test_labels[next(iter(test_decoded.values())).kept]
    rel = [str(files[i].relative_to(args.data / "train")) for i in some.kept]
    print(tagged(
        f"{len(labels)} train-stage images ({args.holdout:.0%} unseen per split), "
        f"{len(test_labels)} test, {args.splits} splits, "
        + (f"{args.minutes:g}-minute budget (at most {args.epochs} epochs)" if args.minutes
           else "equal compute: " + ", ".join(f"{n} {s.n_epochs} epochs"
                                              for n, s in recipes.items()))
        + f", torch threads {torch.get_num_threads()}"
    ), flush=True)  # fmt: skip

    if args.plan_first and args.minutes:
        recipes = _plan_first(recipes, decoded, labels, rel, classes, args.holdout)

    scores: dict[tuple[str, str], dict[str, list[float]]] = {}
    for seed in range(args.first_split, args.first_split + args.splits):
        tr, va, unseen = _split(labels, rel, args.holdout, seed, base.val_fraction)
        for name, settings in recipes.items():
            images = decoded[cache_size(settings.image_size)].images
            test_images = test_decoded[cache_size(settings.image_size)].images
            plans = []
            result, seconds = timed(partial(
                fit, images[tr], labels[tr], images[va], labels[va], classes, settings,
                on_plan=plans.append,
            ))  # fmt: skip
            model = build_model(settings.architecture, len(classes),
                                image_size=settings.image_size)  # fmt: skip
            model.load_state_dict(result.state_dict)
            model = model.to(memory_format=torch.channels_last).eval()
            line = []
            views = {ev: (images, test_images, None if whole else settings.image_size, flip)
                     for ev, (whole, flip) in EVALS.items()}  # fmt: skip
            if settings.image_size < reference_side(settings):  # also at the family's crop
                up = cache_size(reference_side(settings))
                views["up-full+flip"] = (decoded[up].images, test_decoded[up].images, None, True)
            for side in args.eval_sizes:  # center crops at other sides than the training one
                at = cache_size(side)  # the images stored for that side
                stored, test_stored = decoded[at].images, test_decoded[at].images
                views[f"crop{side}+flip"] = (stored, test_stored, side, True)
            models = dict.fromkeys(views, model)
            for side in args.refit_sizes:  # BatchNorm statistics re-estimated at that side
                at = cache_size(side)
                views[f"crop{side}bn+flip"] = (decoded[at].images, test_decoded[at].images,
                                               side, True)  # fmt: skip
                models[f"crop{side}bn+flip"] = refit_batchnorm(
                    model, decoded[at].images[tr], crop=side, architecture=settings.architecture
                )
            for ev, (stored, test_stored, crop, flip) in views.items():
                got = scores.setdefault((name, ev), {"unseen": [], "test": []})
                arch = settings.architecture
                got["unseen"].append(accuracy(models[ev], stored[unseen], labels[unseen],
                                              crop=crop, flip=flip, architecture=arch))  # fmt: skip
                got["test"].append(accuracy(models[ev], test_stored, test_labels, crop=crop,
                                            flip=flip, architecture=arch))  # fmt: skip
                line.append(f"{ev} {got['unseen'][-1]:.3f}/{got['test'][-1]:.3f}")
            epochs = plans[0].epochs if plans else settings.n_epochs
            print(tagged(
                f"split {seed} {name}: {epochs} epochs in {seconds:.0f}s, best epoch "
                f"{result.best_epoch}; unseen/test " + ", ".join(line)
            ), flush=True)  # fmt: skip

    print("\n| recipe | eval | unseen (mean±sd, %) | test stage (mean±sd, %) |")
    print("|---|---|---:|---:|")
    summary = []
    for (name, ev), got in scores.items():
        print(f"| {name} | {ev} | {_spread(got['unseen'])} | {_spread(got['test'])} |")
        summary.append(f"{name}/{ev} unseen {_spread(got['unseen'])} test {_spread(got['test'])}")
    print(tagged("recipe_bench: " + ", ".join(summary)), flush=True)


if __name__ == "__main__":
    main()
