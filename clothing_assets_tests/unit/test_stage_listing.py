"""Listing a stage (stage/listing.py): the class of a path, what a local listing holds, and
errors that name the variable to set."""

from __future__ import annotations

import pytest

from clothing_assets.stage import StageLocationError, class_of, list_stage


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hat/a.jpg", "hat"),
        ("train/t-shirt/x y.jpg", "t-shirt"),
        ("a.jpg", None),
        ("shoes/été/ß.jpg", "été"),
    ],
)
def test_class_is_the_lowest_folder(path, expected):
    assert class_of(path) == expected


def test_list_stage_reports_files_and_skips_hidden(tmp_path):
    (tmp_path / "hat").mkdir()
    (tmp_path / "hat" / "a.jpg").write_bytes(b"123")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b.jpg").write_bytes(b"1")
    (tmp_path / "hat" / ".DS_Store").write_bytes(b"1")
    listing = list_stage(str(tmp_path))
    assert listing["RELATIVE_PATH"].tolist() == ["hat/a.jpg"]
    assert listing["SIZE"].tolist() == [3]
    assert listing["FILE_URL"].iloc[0].startswith("file://")
    assert listing["LAST_MODIFIED"].notna().all()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_list_stage_errors_name_the_variable(tmp_path, kind):
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("x")
    with pytest.raises(StageLocationError, match="Set CLOTHING_TEST_STAGE_URL"):
        list_stage(str(target), env_var="CLOTHING_TEST_STAGE_URL")
