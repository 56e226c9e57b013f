"""Paths a local stage cannot be escaped by, on a real filesystem with links and FIFOs: fsspec's
URL chaining syntax read literally, a file swapped for a link or FIFO after its check refused,
a file over the size limit refused before it is read."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from clothing_assets.stage import ReadLimits, list_stage, read_bytes, stage_file_url
from clothing_assets_tests.support import (
    COLOURS,
    materialize,
    metadata_of,
    read_table,
    write_image,
)


@pytest.fixture
def chaining_stage(tmp_path) -> tuple[Path, Path, Path]:
    """A stage with a link `x` to a file outside, and a folder literally named `x::` whose
    file `x::/d/f.jpg` fsspec would read as `x` chained with `/d/f.jpg`."""
    stage, outside = tmp_path / "stage", tmp_path / "outside"
    private = write_image(outside / "private.jpg", COLOURS["shoes"], seed=2, size=48)
    literal = write_image(stage / "x::" / "d" / "f.jpg", COLOURS["hat"], seed=1)
    (stage / "x").symlink_to(private)
    return stage, literal, private


@pytest.mark.timeout(60)
def test_a_path_with_chaining_syntax_is_read_literally_inside_the_stage(chaining_stage):
    stage, literal, private = chaining_stage
    listing = list_stage(str(stage)).set_index("RELATIVE_PATH")
    assert listing.loc["x", "ERROR"] == "symbolic link leads outside the stage; not read"
    assert pd.isna(listing.loc["x::/d/f.jpg", "ERROR"])

    url = stage_file_url(str(stage), "x::/d/f.jpg")
    data = read_bytes(url)
    assert data == literal.read_bytes() and data != private.read_bytes()

    # a FIFO in place of the link: a reader that reinterpreted the path would block on it
    (stage / "x").unlink()
    os.mkfifo(stage / "x")
    assert read_bytes(stage_file_url(str(stage), "x::/d/f.jpg")) == literal.read_bytes()


@pytest.mark.timeout(60)
def test_a_file_swapped_for_a_link_or_fifo_after_the_check_is_refused_not_followed(tmp_path):
    stage, outside = tmp_path / "stage", tmp_path / "outside"
    write_image(stage / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    write_image(outside / "private.jpg", COLOURS["shoes"], seed=2)
    url = stage_file_url(str(stage), "hat/a.jpg")  # checked now, read later
    (stage / "hat" / "a.jpg").unlink()
    (stage / "hat" / "a.jpg").symlink_to(outside / "private.jpg")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)
    (stage / "hat" / "a.jpg").unlink()
    os.mkfifo(stage / "hat" / "a.jpg")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)
    # a folder on the way swapped for a link out
    (stage / "hat").rename(stage / "hat-old")
    (stage / "hat").symlink_to(outside)
    (outside / "a.jpg").write_bytes(b"outside")
    with pytest.raises(OSError, match="refused"):
        read_bytes(url)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path):
    path = write_image(tmp_path / "stage" / "hat" / "a.jpg", COLOURS["hat"], seed=1)
    url = stage_file_url(str(tmp_path / "stage"), "hat/a.jpg")
    limits = ReadLimits(max_bytes=path.stat().st_size - 1)
    with pytest.raises(OSError, match="file too large.*CLOTHING_MAX_FILE_BYTES"):
        read_bytes(url, limits)
    assert read_bytes(url, ReadLimits(max_bytes=path.stat().st_size)) == path.read_bytes()


@pytest.mark.timeout(300)
def test_a_chaining_path_in_the_test_stage_is_scored_from_its_own_file(local_env):
    write_image(local_env.test / "x::" / "hat" / "f.jpg", COLOURS["hat"], seed=77)
    os.mkfifo(local_env.test / "x")  # what `x::/hat/f.jpg` would open if reinterpreted
    result = materialize(checks=False)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    assert table.loc["x", "ERROR"] == "not a regular file (FIFO, socket or device); not read"
    assert pd.isna(table.loc["x::/hat/f.jpg", "ERROR"])
    assert table.loc["x::/hat/f.jpg", "TYPE"] == "hat" or pd.notna(
        table.loc["x::/hat/f.jpg", "TYPE"]
    )
    assert metadata_of(result, "clothing_predictions")["rows_scored"] == len(table) - 1
