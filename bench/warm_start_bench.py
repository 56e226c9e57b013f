"""Warm start against a fresh start when a tenth of the training images are new, over
repeated stratified splits.

For each of `--splits` seeds the train stage is split as `recipe_bench` splits it (per class,
`--holdout` set aside as unseen images; the rest into training and validation rows as `fit`
splits them). Per class, `--new` of the training rows are held back as the images that arrive
after the champion was trained:

- `champion`: trained from ImageNet's weights on the older rows only, `--epochs` epochs;
- `imagenet`: the scheduled retrain as it runs by default, from ImageNet's weights on all
  training rows, `--epochs` epochs;
- `champion-init`: the retrain with `init: champion`, from the champion's weights on all
  training rows, `--warm-epochs` epochs (half of `--epochs` by default);
- with `--variants`, more warm starts from the same champion: `EPOCHSe` (another number of
  epochs) or `lrRATE` (another `base_lr`), e.g. `--variants 6e lr0.0005`.

All runs use the default recipe (`TrainSettings`, with its frozen blocks) at a fixed number of
epochs, so a shared machine changes the seconds but not what is learnt. Each model is scored
on the unseen images and the test stage center-cropped with its mirror image, as the scorer
scores. Prints one line per split, then mean and spread per run; its last line reads
`warm_start_bench: <run> unseen M±S test M±S seconds M, ...`.

    python -m bench.warm_start_bench --splits 3 --epochs 9
"""

import statistics
from dataclasses import replace
from functools import partial

import torch

from bench.common import parse, parser, tagged, timed
from bench.recipe_bench import _split, _spread, _stage, accuracy, holdout_split
from clothing_assets.ml.data import load_images
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.train import fit


def variant(name: str, warm: TrainSettings) -> TrainSettings:
    """The warm start `name` describes: `6e` (6 epochs) or `lr0.0005` (that base_lr)."""
    if name.endswith("e") and name[:-1].isdigit():
        return replace(warm, n_epochs=int(name[:-1]))
    if name.startswith("lr"):
        return replace(warm, base_lr=float(name[2:]))
    raise SystemExit(f"unknown variant {name!r}: give e.g. 6e or lr0.0005")


def main() -> None:
    described = parser(__doc__)
    described.add_argument("--splits", type=int, default=3)
    described.add_argument("--first-split", type=int, default=0)
    described.add_argument("--holdout", type=float, default=0.2)
    described.add_argument("--new", type=float, default=0.1, help="fraction of training rows new")
    described.add_argument("--epochs", type=int, default=9)
    described.add_argument("--warm-epochs", type=int, default=None, help="default: epochs // 2")
    described.add_argument("--variants", nargs="*", default=[], help="e.g. 6e lr0.0005")
    described.add_argument(
        "--no-imagenet", action="store_true",
        help="leave out the ImageNet retrain (fixed epochs and seeds repeat it exactly: compare "
        "variants with an earlier run's)",
    )  # fmt: skip
    args = parse(described)
    warm_epochs = args.warm_epochs or max(1, args.epochs // 2)
    base = TrainSettings(n_epochs=args.epochs, max_train_minutes=0.0)
    settings = {"champion": base, "imagenet": base,
                "champion-init": replace(base, n_epochs=warm_epochs)}  # fmt: skip
    for name in args.variants:
        settings[f"champion-init-{name}"] = variant(name, settings["champion-init"])
    if args.no_imagenet:
        del settings["imagenet"]
    runs = list(settings)

    files, labels, classes = _stage(args.data / "train")
    test_files, test_labels, _ = _stage(args.data / "test", classes)
    side = cache_size(base.image_size)
    decoded = load_images([str(f) for f in files], side)
    test_decoded = load_images([str(f) for f in test_files], side)
    labels, test_labels = labels[decoded.kept], test_labels[test_decoded.kept]
    images, test_images = decoded.images, test_decoded.images
    rel = [str(files[i].relative_to(args.data / "train")) for i in decoded.kept]
    print(tagged(
        f"{len(labels)} train-stage images ({args.holdout:.0%} unseen, {args.new:.0%} of the "
        f"training rows new), {len(test_labels)} test, {args.splits} splits; champion and "
        f"imagenet {args.epochs} epochs, champion-init {warm_epochs}; torch threads "
        f"{torch.get_num_threads()}"
    ), flush=True)  # fmt: skip

    score = partial(accuracy, crop=base.image_size, flip=True, architecture=base.architecture)
    got: dict[str, dict[str, list[float]]] = {r: {"unseen": [], "test": [], "s": []} for r in runs}
    for seed in range(args.first_split, args.first_split + args.splits):
        tr, va, unseen = _split(labels, rel, args.holdout, seed, base.val_fraction)
        older_at, _ = holdout_split(labels[tr], args.new, seed + 1000)
        older = tr[older_at]
        line, champion_state = [], None
        for run in runs:
            rows = older if run == "champion" else tr
            init = champion_state if run.startswith("champion-init") else None
            result, seconds = timed(partial(
                fit, images[rows], labels[rows], images[va], labels[va], classes, settings[run],
                init_state=init,
            ))  # fmt: skip
            if run == "champion":
                champion_state = result.state_dict
            model = build_model(base.architecture, len(classes), image_size=base.image_size)
            model.load_state_dict(result.state_dict)
            model = model.to(memory_format=torch.channels_last).eval()
            got[run]["unseen"].append(score(model, images[unseen], labels[unseen]))
            got[run]["test"].append(score(model, test_images, test_labels))
            got[run]["s"].append(seconds)
            line.append(f"{run} {got[run]['unseen'][-1]:.3f}/{got[run]['test'][-1]:.3f} "
                        f"in {seconds:.0f}s ({len(rows)} rows)")  # fmt: skip
        print(tagged(f"split {seed}: unseen/test " + ", ".join(line)), flush=True)

    print("\n| run | epochs | unseen (mean±sd, %) | test stage (mean±sd, %) | seconds |")
    print("|---|---:|---:|---:|---:|")
    summary = []
    for run, scores in got.items():
        secs = statistics.median(scores["s"])
        print(f"| {run} | {settings[run].n_epochs} | {_spread(scores['unseen'])} | "
              f"{_spread(scores['test'])} | {secs:.0f} |")  # fmt: skip
        summary.append(f"{run} unseen {_spread(scores['unseen'])} test "
                       f"{_spread(scores['test'])} seconds {secs:.0f}")  # fmt: skip
    print(tagged("warm_start_bench: " + ", ".join(summary)), flush=True)


if __name__ == "__main__":
    main()
