"""Putting the dataset in place: download (from a server on 127.0.0.1) or link a copy."""

from __future__ import annotations

import functools
import threading
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clothing_assets.fetch_data import (
    DATASET_DIGEST,
    DATASET_URL,
    FetchError,
    content_digest,
    download,
    link_existing,
    main,
)
from clothing_assets_tests.support import SHARED_DATASET, make_stage


@pytest.fixture
def served(tmp_path):
    """A zip laid out like GitHub's archive of clothing-dataset-small, served on 127.0.0.1."""
    src = tmp_path / "src" / "clothing-dataset-small-master"
    for split in ("train", "validation", "test"):
        make_stage(src / split, 1)
    archive = tmp_path / "www" / "master.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in src.rglob("*"):
            zf.write(path, path.relative_to(src.parent))
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", content_digest(src)
    server.shutdown()
    server.server_close()


def test_download_unpacks_train_and_validation_as_test(served, tmp_path):
    url, digest = served
    target = tmp_path / "data" / "clothing-dataset-small"
    download(target, url=f"{url}/master.zip", digest=digest)
    assert sorted(p.name for p in target.iterdir()) == ["test", "train"]
    assert len(list((target / "train").rglob("*.jpg"))) == 3
    assert len(list((target / "test").rglob("*.jpg"))) == 3


def test_a_download_whose_images_differ_from_the_pinned_digest_is_refused(served, tmp_path):
    url, _ = served
    target = tmp_path / "data" / "clothing-dataset-small"
    with pytest.raises(FetchError, match="not the pinned"):
        download(target, url=f"{url}/master.zip", digest="0" * 64)
    assert not target.exists()  # nothing half put in place


def test_the_download_is_pinned_to_a_commit_and_a_digest():
    assert DATASET_URL.endswith(".zip") and "/heads/" not in DATASET_URL
    assert len(DATASET_DIGEST) == 64


def test_unreachable_download_says_how_to_use_a_local_copy(served, tmp_path):
    with pytest.raises(FetchError, match="make run DATA="):
        download(tmp_path / "d", url=f"{served[0]}/missing.zip")


def test_link_existing_copy_and_refuse_a_wrong_folder(tmp_path, capsys):
    copy = tmp_path / "copy"
    make_stage(copy / "train", 1)
    make_stage(copy / "test", 1)
    target = tmp_path / "data" / "clothing-dataset-small"
    assert main(["--from", str(copy), "--target", str(target)]) == 0
    assert target.is_symlink() and (target / "train" / "hat").is_dir()
    with pytest.raises(FetchError, match="needs train/ and test/"):
        link_existing(tmp_path / "copy" / "train", target)
    assert main(["--target", str(target)]) == 0  # already in place: nothing downloaded
    assert "already holds" in capsys.readouterr().out


SHARED = SHARED_DATASET


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/clothing-dataset-small")
def test_the_shared_copy_matches_the_pinned_digest(tmp_path, capsys):
    # the shared copy was checked file by file against the pinned commit's git blobs
    assert main(["--from", str(SHARED), "--target", str(tmp_path / "data")]) == 0
    assert "matches the pinned dataset" in capsys.readouterr().out
