"""Near-duplicates and label issues on a planted stage at full size, and the pass at scale.

    python -m bench.duplicates_bench [--data DIR] [--model FILE] [--copied 0.1]
                                     [--mislabelled 0.05] [--embeddings 100000]

The planted stage is --data's train images: --copied of them get a copy of each kind (resized
to half, JPEG quality 40, cropped by 10 %, re-encoded as PNG, and byte-exact) and --mislabelled
of the others are given the next class's label. Every image is embedded and hashed as scoring
does it (the model file's decode side and eval preset, its penultimate layer, and the
perceptual hashes of the same decode) with --model, a clothing-assets model file such as the
champion's, or by default EfficientNet-Lite0's installed ImageNet weights at 128 px. The bench
prints the near-duplicate precision and recall of the cosine alone at a few thresholds and the
one `calibrate_threshold` picks; of the combined rule (candidates by cosine, confirmed by the
hashes' Hamming distance or a high cosine) at a few settings, the default's also per planted
kind (the recall of the pairs with a copy of that kind); and the share of the mislabels among
the top 2x-planted rows of the label-review queue. Then it pads the embeddings with synthetic
unit vectors (and random hashes) to --embeddings and times the near-duplicate pass over them,
with this process's peak memory.
Targets on 2 cores: recall and precision >= 95 %, mislabels >= 80 %, the pass <= 2 minutes
at 100,000 embeddings.
"""

from __future__ import annotations

import io
import resource
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bench.common import jpegs, parse, parser, tagged, timed, torch_line
from clothing_assets.ml.duplicates import (
    CANDIDATE_THRESHOLD,
    CONFIRM_THRESHOLD,
    MAX_HAMMING,
    calibrate_threshold,
    duplicate_pairs,
    near_copy_filter,
    similar_index_pairs,
)
from clothing_assets.ml.embeddings import embed_batch
from clothing_assets.ml.images import prepare
from clothing_assets.ml.label_issues import label_issues
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.phash import image_hashes
from clothing_assets.ml.settings import TrainSettings

KINDS = ("half", "jpeg40", "crop10", "reencoded", "exact")
SWEEP = (0.78, 0.82, 0.86, 0.88, 0.90, 0.92, 0.93, 0.94, 0.95, 0.96)
# (candidate cosine, most differing bits, confirming cosine) of the combined rule; the first is
# the default
RULES = (
    (CANDIDATE_THRESHOLD, MAX_HAMMING, CONFIRM_THRESHOLD),
    (0.78, 6, 0.98), (0.82, 6, 0.98), (0.80, 4, 0.98), (0.80, 8, 0.98), (0.80, 6, 0.96),
    (0.80, 6, 1.01),
)  # fmt: skip


def copy_of(data: bytes, kind: str) -> bytes:
    """A planted copy of the image `data`: one of KINDS."""
    if kind == "exact":
        return data
    image = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = image.size
    buffer = io.BytesIO()
    if kind == "half":
        image.resize((w // 2, h // 2), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    elif kind == "jpeg40":
        image.save(buffer, "JPEG", quality=40)
    elif kind == "crop10":
        image.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(buffer, "JPEG", quality=90)
    else:
        image.save(buffer, "PNG")
    return buffer.getvalue()


def model_file(path: Path | None, classes: list[str]) -> ModelFile:
    """The model file at `path`, or Lite0 with its installed ImageNet weights at 128 px."""
    if path is not None:
        return ModelFile.load(path.read_bytes())
    settings = TrainSettings(image_size=128)
    model = build_model("efficientnet_lite0", len(classes), weights="imagenet", image_size=128)
    return ModelFile.of_training(model.state_dict(), classes, settings)


def embed_all(
    file: ModelFile, datas: list[bytes], batch: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """([n, d] embeddings, whole-image hashes, centre hashes) of the files `datas`, as scoring
    makes them: from one decode each."""
    model, preset = file.build().eval(), file.eval_preset()
    out, whole, centre = [], [], []
    for start in range(0, len(datas), batch):
        images = torch.stack([prepare(d, file.cache_size) for d in datas[start : start + batch]])
        out.append(embed_batch(model, preset(images)))
        hashes = image_hashes(images)
        whole.append(hashes[0])
        centre.append(hashes[1])
    return np.concatenate(out), np.concatenate(whole), np.concatenate(centre)


def planted(files: list[Path], copied: float, mislabelled: float, seed: int = 0):
    """(frame of RELATIVE_PATH, GIVEN, GROUP, MISLABEL, DATA) of the originals and copies."""
    rng = np.random.default_rng(seed)
    classes = sorted({f.parent.name for f in files})
    order = rng.permutation(len(files))
    n_copied = int(round(copied * len(files)))
    n_wrong = int(round(mislabelled * len(files)))
    rows = []
    for rank, index in enumerate(order):
        f = files[index]
        data, label = f.read_bytes(), f.parent.name
        wrong = n_copied <= rank < n_copied + n_wrong
        given = classes[(classes.index(label) + 1) % len(classes)] if wrong else label
        path = f"{label}/{f.name}"
        rows.append((path, given, rank if rank < n_copied else -1, wrong, data))
        if rank < n_copied:
            for kind in KINDS:
                rows.append((f"{path}.{kind}", label, rank, False, copy_of(data, kind)))
    frame = pd.DataFrame(rows, columns=["RELATIVE_PATH", "GIVEN", "GROUP", "MISLABEL", "DATA"])
    return frame, classes


def near_quality(frame: pd.DataFrame, vectors: np.ndarray) -> list[str]:
    """Precision and recall of the cosine alone at the sweep's thresholds and the calibrated
    one, then of the combined rule at RULES' settings, the default's per planted kind."""
    i, j, similarity = similar_index_pairs(vectors, min(SWEEP) - 0.1)
    groups = frame["GROUP"].to_numpy()
    copy = (groups[i] == groups[j]) & (groups[i] >= 0)
    sizes = pd.Series(groups[groups >= 0]).value_counts()
    planted = int((sizes * (sizes - 1) // 2).sum())
    lines = []
    for t in SWEEP:
        lines.append(f"  cosine {t:.2f}: {_quality(similarity >= t, copy, planted)}")
    lines.append(f"  calibrated (precision 0.99): {calibrate_threshold(similarity, copy):.3f}")
    per_kind = int((sizes - 1).sum())  # each copy pairs with every other member of its group
    kinds = frame["RELATIVE_PATH"].str.extract(r"\.(" + "|".join(KINDS) + ")$")[0].to_numpy()
    for n, (low, bits, high) in enumerate(RULES):
        kept = (similarity >= low) & near_copy_filter(frame, bits, high)(i, j, similarity)
        lines.append(f"  rule cosine >= {low:.2f} and (hamming <= {bits} or cosine >= "
                     f"{high:.2f}){' (default)' if n == 0 else ''}: "
                     f"{_quality(kept, copy, planted)}")  # fmt: skip
        if n == 0:
            for kind in KINDS:
                with_kind = copy & ((kinds[i] == kind) | (kinds[j] == kind))
                found = int((kept & with_kind).sum())
                share = 100 * found / per_kind
                lines.append(f"    pairs with the {kind} copy: recall {share:.1f} % "
                             f"({found} of {per_kind})")  # fmt: skip
    return lines


def _quality(kept: np.ndarray, copy: np.ndarray, planted: int) -> str:
    found = int((kept & copy).sum())
    return (f"recall {100 * found / planted:.1f} %, precision "
            f"{100 * found / max(1, int(kept.sum())):.1f} %, {int(kept.sum())} pairs")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    described = parser(__doc__)
    described.add_argument("--model", type=Path, default=None, help="a model file")
    described.add_argument("--images", type=int, default=None, help="use N of the images")
    described.add_argument("--copied", type=float, default=0.1)
    described.add_argument("--mislabelled", type=float, default=0.05)
    described.add_argument("--embeddings", type=int, default=100_000)
    args = parse(described, argv)
    print(torch_line())
    files = jpegs(args.data / "train")
    if args.images is not None:  # a seeded sample across the classes, not the first folders
        order = np.random.default_rng(0).permutation(len(files))[: args.images]
        files = [files[i] for i in sorted(order)]
    frame, classes = planted(files, args.copied, args.mislabelled)
    file = model_file(args.model, classes)
    (vectors, frame["PHASH"], frame["PHASH_CENTER"]), seconds = timed(
        lambda: embed_all(file, frame["DATA"].tolist())
    )
    print(f"embedded {len(frame)} images in {seconds:.0f}s ({file.architecture})")
    for line in near_quality(frame, vectors):
        print(line)
    originals = frame.index[~frame["RELATIVE_PATH"].str.contains(r"\.(?:" + "|".join(KINDS) + ")$")]
    issues = label_issues(frame.loc[originals, "RELATIVE_PATH"].tolist(),
                          frame.loc[originals, "GIVEN"].tolist(), vectors[originals])  # fmt: skip
    wrong = set(frame.loc[frame["MISLABEL"], "RELATIVE_PATH"])
    caught = len(set(issues.head(2 * len(wrong))["RELATIVE_PATH"]) & wrong)
    rng = np.random.default_rng(1)
    pad = rng.standard_normal((max(0, args.embeddings - len(vectors)), vectors.shape[1]))
    pad = (pad / np.linalg.norm(pad, axis=1, keepdims=True)).astype(np.float32)
    padding = rng.integers(-(2**63), 2**63 - 1, (2, len(pad)), dtype=np.int64)
    everything = pd.DataFrame({
        "RELATIVE_PATH": [f"x{i}" for i in range(len(vectors) + len(pad))], "STAGE": "train",
        "CONTENT_SHA256": None, "EMBEDDING": list(np.concatenate([vectors, pad])),
        "PHASH": np.concatenate([frame["PHASH"].to_numpy(), padding[0]]),
        "PHASH_CENTER": np.concatenate([frame["PHASH_CENTER"].to_numpy(), padding[1]]),
    })  # fmt: skip
    pairs, pass_seconds = timed(lambda: duplicate_pairs(everything))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(tagged(
        f"duplicates_bench: mislabels {100 * caught / max(1, len(wrong)):.1f} % in the top "
        f"2x ({caught} of {len(wrong)}), pass over {len(everything)} embeddings "
        f"{pass_seconds:.1f}s ({len(pairs)} pairs), peak RSS {peak:.0f} MB"
    ))  # fmt: skip


if __name__ == "__main__":
    main()
