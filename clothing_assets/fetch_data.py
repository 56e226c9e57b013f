"""Put the clothing dataset where the default stages look for it (data/clothing-dataset-small).

python -m clothing_assets.fetch_data                      # download it (with a progress bar)
python -m clothing_assets.fetch_data --from ../shared/clothing-dataset-small   # link a copy
"""

import argparse
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

DATASET_URL = (
    "https://github.com/alexeygrigorev/clothing-dataset-small/archive/refs/heads/master.zip"
)
# upstream folder -> our stage; upstream's own test split stays out for independent evaluation
SPLITS = {"train": "train", "validation": "test"}


class FetchError(RuntimeError):
    """The dataset could not be put in place; the message says what to do."""


def _has_splits(folder: Path) -> bool:
    return all((folder / split).is_dir() for split in SPLITS.values())


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


def download(target: Path, url: str = DATASET_URL) -> None:
    """Download the public dataset zip and unpack its train and validation splits."""
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
