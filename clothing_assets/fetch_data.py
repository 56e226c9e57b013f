"""Put the clothing dataset where the default stages look for it (data/clothing-dataset-small).

python -m clothing_assets.fetch_data                      # download it (with a progress bar)
python -m clothing_assets.fetch_data --from ../shared/clothing-dataset-small   # link a copy
"""

import argparse
import hashlib
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from clothing_assets.settings import VARIABLES

DEFAULT_TRAIN_STAGE_URL = VARIABLES["CLOTHING_TRAIN_STAGE_URL"].default
DEFAULT_TEST_STAGE_URL = VARIABLES["CLOTHING_TEST_STAGE_URL"].default

# upstream's last commit (2020-11-05): a branch could move under a user, a commit cannot
DATASET_COMMIT = "11961516512414bf9f6c150a832cfd21b54a6b54"
DATASET_URL = (
    f"https://github.com/alexeygrigorev/clothing-dataset-small/archive/{DATASET_COMMIT}.zip"
)
# content_digest of that commit's train/ and validation/ (3,409 images); GitHub may re-pack an
# archive, so the digest covers the unpacked files, not the zip's bytes
DATASET_DIGEST = "4bf9374ca73b22007d6d75271f009f993d604cb9cf575238205f44fa79d8f3ce"
# upstream folder -> our stage; upstream's own test split stays out for independent evaluation
SPLITS = {"train": "train", "validation": "test"}


class FetchError(RuntimeError):
    """The dataset could not be put in place; the message says what to do."""


def _has_splits(folder: Path) -> bool:
    return all((folder / split).is_dir() for split in SPLITS.values())


def content_digest(root: Path, splits: dict[str, str] = SPLITS) -> str:
    """SHA-256 over the sorted lines `<our split>/<class>/<file> <sha256 of the file>` of every
    file under `root`'s split folders: the same for a copy of the same images wherever it lies."""
    lines = []
    for folder, ours in splits.items():
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                relative = path.relative_to(root / folder).as_posix()
                lines.append(f"{ours}/{relative} {hashlib.sha256(path.read_bytes()).hexdigest()}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def link_existing(source: Path, target: Path) -> None:
    """Point `target` at an existing copy with `train/` and `test/` folders (a symlink)."""
    source = source.expanduser().resolve()
    if not _has_splits(source):
        raise FetchError(
            f"{source} does not look like clothing-dataset-small: it needs train/ and test/ "
            "folders of <class>/<file>.jpg"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink():
        target.unlink()
    target.symlink_to(source, target_is_directory=True)


def download(target: Path, url: str = DATASET_URL, digest: str | None = DATASET_DIGEST) -> None:
    """Download the pinned dataset zip, check its images against `digest` and only then move
    its train and validation splits into `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = Path(tmp) / "dataset.zip"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                with (
                    archive.open("wb") as out,
                    tqdm(
                        total=total, unit="B", unit_scale=True, desc="clothing-dataset-small"
                    ) as bar,
                ):
                    while chunk := response.read(1 << 20):
                        out.write(chunk)
                        bar.update(len(chunk))
        except OSError as exc:
            raise FetchError(
                f"could not download {url}: {exc}. Without internet, point at an existing copy: "
                "make run DATA=/path/to/clothing-dataset-small (or set CLOTHING_TRAIN_STAGE_URL "
                "and CLOTHING_TEST_STAGE_URL)"
            ) from exc
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(unpacked)
        [root] = [p for p in unpacked.iterdir() if p.is_dir()]
        missing = [u for u in SPLITS if not (root / u).is_dir()]
        if missing:
            raise FetchError(f"{url} lacks the folders {missing}; is it clothing-dataset-small?")
        if digest is not None and (found := content_digest(root)) != digest:
            raise FetchError(
                f"{url} unpacked to images whose digest is {found}, not the pinned {digest}: "
                "the download is corrupt or upstream changed; nothing was put in place"
            )
        target.mkdir(parents=True, exist_ok=True)
        for upstream, ours in SPLITS.items():
            shutil.move(str(root / upstream), str(target / ours))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="an existing copy to link")
    parser.add_argument(
        "--target", type=Path, default=Path(DEFAULT_TRAIN_STAGE_URL).parent,
        help=f"where the default stages look (default {Path(DEFAULT_TEST_STAGE_URL).parent})",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        if args.source:
            link_existing(args.source, args.target)
            print(f"{args.target} -> {args.source.resolve()}")
            same = content_digest(args.target, {"train": "train", "test": "test"})
            print(
                "the copy matches the pinned dataset"
                if same == DATASET_DIGEST
                else "the copy differs from the pinned dataset (fine for your own images)"
            )
        elif _has_splits(args.target):
            print(f"{args.target} already holds train/ and test/")
        else:
            download(args.target)
            print(f"downloaded to {args.target}")
    except FetchError as exc:
        print(f"fetch_data: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
