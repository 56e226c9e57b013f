"""Labels, the validation split, and decoding a catalog's images once into a uint8 tensor
(kept in a cache file tied to the catalog rows, so a re-run does not read the stage again)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from clothing_assets.ml.durable import write_atomic
from clothing_assets.ml.images import ImageDecodeError, decode_image
from clothing_assets.stage import (
    FileTooLargeError,
    UnsafePathError,
    class_of,
    read_bytes,
    url_refused,
)

log = logging.getLogger(__name__)


def stable_hash(text: str) -> int:
    """A hash of `text` that is the same on every machine and Python process."""
    return int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest()[:8], "big")


def stratified_split(
    paths: Sequence[str], labels: Sequence[int], *, val_fraction: float
) -> tuple[list[int], list[int]]:
    """Split indices into (train, val): per class, the paths with the smallest stable hashes
    form round(val_fraction * n) validation images, keeping at least one training image.

    The split depends only on the paths, so it is the same on every run and machine.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train, val = [], []
    for members in by_class.values():
        members.sort(key=lambda i: (stable_hash(paths[i]), paths[i]))
        k = min(int(round(val_fraction * len(members))), len(members) - 1)
        val.extend(members[:k])
        train.extend(members[k:])
    return sorted(train), sorted(val)


@dataclass
class DecodedImages:
    """Images decoded and resized once: a uint8 tensor NxCxSxS and the files that failed."""

    images: torch.Tensor
    kept: list[int]
    errors: dict[int, str] = field(default_factory=dict)


def load_images(
    urls: Sequence[str | None],
    side: int,
    *,
    threads: int = 8,
    on_image: Callable[[], None] | None = None,
) -> DecodedImages:
    """Read, decode and resize every file in `urls` to side x side, in parallel threads.

    A file that cannot be read or decoded is left out and its index mapped to a one-line
    reason in `errors`; `kept` lists the indices of `images`' rows. A None URL (a path the
    stage refused) is never read: its reason says so.
    """

    def one(url: str | None) -> torch.Tensor | str:
        try:
            return _read_one(url, side)
        finally:
            if on_image is not None:
                on_image()

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(one, urls))
    return _assemble(results, side)


def _read_one(url: str | None, side: int) -> torch.Tensor | str:
    """One file decoded and reduced to side x side as it is decoded (`decode_image`), or the
    one-line reason it could not be."""
    try:
        return decode_image(read_bytes(url), side=side)
    except (ImageDecodeError, UnsafePathError, FileTooLargeError) as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable file: {exc}"


def _assemble(results: Sequence[torch.Tensor | str], side: int) -> DecodedImages:
    kept = [i for i, r in enumerate(results) if isinstance(r, torch.Tensor)]
    errors = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    images = (
        torch.stack([results[i] for i in kept])
        if kept
        else torch.empty((0, 3, side, side), dtype=torch.uint8)
    )
    return DecodedImages(images=images, kept=kept, errors=errors)


def load_images_minted(
    paths: Sequence[str],
    mint: Callable[[Sequence[str]], Sequence[str | None]],
    side: int,
    *,
    batch_size: int = 256,
    threads: int = 8,
    on_image: Callable[[], None] | None = None,
) -> DecodedImages:
    """`load_images` for URLs that expire: `mint(paths)` is called per batch of `batch_size`
    paths, just before the batch is read, never once for everything. A file whose URL the
    server refused (see `stage.url_refused`) is read once more with a freshly minted URL;
    refused again, its reason stays in `errors`."""
    results: list[torch.Tensor | str] = []
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for start in range(0, len(paths), max(1, batch_size)):
            batch = list(paths[start : start + batch_size])
            found = list(pool.map(lambda u: _read_one(u, side), mint(batch)))
            again = [i for i, r in enumerate(found) if isinstance(r, str) and url_refused(r)]
            if again:
                fresh = mint([batch[i] for i in again])
                for i, r in zip(again, pool.map(lambda u: _read_one(u, side), fresh), strict=True):
                    found[i] = r
            results.extend(found)
            if on_image is not None:
                for _ in found:
                    on_image()
    return _assemble(results, side)


def decode_cache_key(rows: Iterable[Sequence[Any]], side: int) -> str:
    """Identifies a decoded set: the side and each catalog row's (RELATIVE_PATH, SIZE,
    LAST_MODIFIED), in order. A file that changes, appears or goes changes the key."""
    blob = json.dumps({"side": side, "rows": [[str(v) for v in row] for row in rows]})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def load_decode_cache(path: Path, key: str, count: int) -> torch.Tensor | None:
    """The cached uint8 images for `key` (count x 3 x S x S), or None when the file is absent,
    unreadable, of other rows, or not what it should be; never unpickles arbitrary objects."""
    if not path.is_file():
        return None
    try:
        cached = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a torn or foreign file is a miss, decoded again
        return None
    if not isinstance(cached, dict) or cached.get("key") != key:
        return None
    images = cached.get("images")
    if not (
        isinstance(images, torch.Tensor)
        and images.dtype == torch.uint8
        and images.dim() == 4
        and len(images) == count
    ):
        return None
    return images


def save_decode_cache(
    path: Path,
    key: str,
    images: torch.Tensor,
    *,
    on_warning: Callable[[str], None] | None = None,
) -> bool:
    """Write the decoded images for `key` to `path` durably (`durable.write_atomic`),
    replacing any other set: one cache per models folder, so its size stays bounded.

    The cache only saves time: a write that fails (a full disk) is reported to `on_warning`
    (default: this module's logger), the old cache stays, and False is returned."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda out: torch.save({"key": key, "images": images.contiguous()}, out))
    except OSError as exc:
        (on_warning or log.warning)(f"decode cache not written, training goes on: {exc}")
        return False
    return True


class TrainingDataError(ValueError):
    """The catalog cannot train a model; the message says what to check."""


def downsample(frame: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """Keep ceil(fraction * n) images of each class, chosen by a stable hash of the path."""
    if not 0.0 < fraction <= 1.0:
        raise TrainingDataError(f"downsample_to must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return frame.sort_values("RELATIVE_PATH").reset_index(drop=True)
    keep = []
    for _, group in frame.groupby("CLASS"):
        ordered = group.assign(_h=group["RELATIVE_PATH"].map(stable_hash)).sort_values("_h")
        keep.append(ordered.head(max(1, int(-(-len(group) * fraction // 1)))))
    return pd.concat(keep).drop(columns="_h").sort_values("RELATIVE_PATH").reset_index(drop=True)


def training_rows(catalog: pd.DataFrame, fraction: float, *, env_var: str) -> pd.DataFrame:
    """The usable catalog rows (no ERROR, a class folder) with their CLASS, downsampled;
    at least two classes or TrainingDataError naming the stage's variable."""
    usable = catalog[catalog["ERROR"].isna()].copy()
    usable["CLASS"] = usable["RELATIVE_PATH"].map(class_of)
    usable = downsample(usable.dropna(subset=["CLASS"]), fraction)
    if usable["CLASS"].nunique() < 2:
        raise TrainingDataError(
            f"clothing_train has {len(usable)} usable images in "
            f"{usable['CLASS'].nunique()} class folders; training needs at least two classes. "
            f"Check the train stage ({env_var}) and materialize clothing_train."
        )
    return usable


@dataclass
class LabelledImages:
    """Decoded training images with their class indices, split into train and validation."""

    images: torch.Tensor
    labels: torch.Tensor  # index into `classes`, one per image
    classes: list[str]
    train: torch.Tensor  # indices of the training images
    val: torch.Tensor  # indices of the validation images

    def val_class_names(self) -> list[str]:
        """The class name of each validation image, in order."""
        return [self.classes[i] for i in self.labels[self.val].tolist()]


def labelled_split(
    rows: pd.DataFrame, images: torch.Tensor, *, val_fraction: float
) -> LabelledImages:
    """`images` (one per row of `rows`, with its CLASS) labelled by their sorted class names
    and split as `stratified_split` does."""
    classes = sorted(rows["CLASS"].unique())
    labels = torch.tensor([classes.index(c) for c in rows["CLASS"]], dtype=torch.long)
    train_idx, val_idx = stratified_split(
        rows["RELATIVE_PATH"].tolist(), labels.tolist(), val_fraction=val_fraction
    )
    return LabelledImages(
        images=images,
        labels=labels,
        classes=classes,
        train=torch.tensor(train_idx, dtype=torch.long),
        val=torch.tensor(val_idx, dtype=torch.long),
    )


def job_fingerprint(settings: Any, frame: pd.DataFrame) -> str:
    """Identifies a training job: the config and the exact files; a checkpoint resumes only
    a job with the same fingerprint."""
    files = frame[["RELATIVE_PATH", "SIZE"]].astype(str).agg("|".join, axis=1).tolist()
    blob = json.dumps({"settings": asdict(settings), "files": files}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def catalog_fingerprint(frame: pd.DataFrame) -> str:
    """A digest of the training catalog rows a model saw (path, size, last-modified)."""
    rows = ["|".join(str(v) for v in row) for row in frame[list(CACHE_KEY_COLUMNS)].itertuples(
        index=False
    )]  # fmt: skip
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]


CACHE_KEY_COLUMNS = ("RELATIVE_PATH", "SIZE", "LAST_MODIFIED")


def decode_training_images(
    rows: pd.DataFrame,
    mint: Callable[[Sequence[str]], Sequence[str | None]],
    side: int,
    *,
    cache_path: Path | None,
    on_image: Callable[[], None] | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> tuple[DecodedImages, str]:
    """Every row's image at side x side, from the decode cache when it holds exactly these rows
    (`cache_path` None: no cache), else read through URLs minted per batch and cached for the
    next run. Returns the images and "hit", "miss" or "off"."""
    if cache_path is not None:
        key = decode_cache_key(rows[list(CACHE_KEY_COLUMNS)].itertuples(index=False), side)
        cached = load_decode_cache(cache_path, key, len(rows))
        if cached is not None:
            return DecodedImages(images=cached, kept=list(range(len(rows)))), "hit"
    decoded = load_images_minted(rows["RELATIVE_PATH"].tolist(), mint, side, on_image=on_image)
    if cache_path is None:
        return decoded, "off"
    # keyed by the rows that decoded: the next run's usable rows, once the failures are
    # recorded in clothing_train.ERROR
    kept = rows.iloc[decoded.kept][list(CACHE_KEY_COLUMNS)]
    key = decode_cache_key(kept.itertuples(index=False), side)
    save_decode_cache(cache_path, key, decoded.images, on_warning=on_warning)
    return decoded, "miss"
