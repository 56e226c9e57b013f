"""A file replaced between the catalog sync and the read is not scored against its old row:
what was opened (size and time from `fstat` of a local file, the ETag of an S3 object) is
compared with the row, and a changed file waits, unstamped, for the next sync."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from clothing_assets.stage import OpenedFile, read_file
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    materialize,
    metadata_of,
    read_table,
    register_model,
    write_image,
)
from clothing_assets_tests.support.models import tiny_model_bytes
from clothing_assets_tests.support.s3_server import BUCKET, s3, s3_endpoint, upload  # noqa: F401

SYNC = ["clothing_dataset", "clothing_test"]
WHEN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def test_an_opened_file_differs_from_its_row_by_size_time_or_etag():
    local = OpenedFile(size=10, modified=WHEN)
    assert local.differs_from(10, pd.Timestamp(WHEN).tz_convert("Europe/Paris"), None) is None
    assert local.differs_from(11, WHEN, None) == "size 11 listed, 10 read"
    assert "modified" in local.differs_from(10, pd.Timestamp("2026-01-02", tz="UTC"), None)
    s3_object = OpenedFile(size=10, etag="abc")
    assert s3_object.differs_from(10, WHEN, "abc") is None
    assert s3_object.differs_from(10, WHEN, "def") == "ETag def listed, abc read"
    # a row that no listing made (no LAST_MODIFIED) has nothing to compare but an ETag
    assert local.differs_from(0, None, None) is None
    assert OpenedFile().differs_from(10, WHEN, "abc") is None  # a source that says nothing


def test_a_local_read_reports_the_open_files_own_size_and_time(tmp_path):
    path = write_image(tmp_path / "a.jpg", COLOURS["hat"], seed=1)
    os.utime(path, ns=(0, int(WHEN.timestamp()) * 10**9 + WHEN.microsecond * 1000))
    data, opened = read_file(str(path))
    assert opened == OpenedFile(len(data), WHEN, None)


def _scored(env, version: str) -> pd.DataFrame:
    table = read_table(env, "clothing_test").set_index("RELATIVE_PATH")
    return table[table["MODEL_VERSION"] == version]


@pytest.mark.timeout(300)
def test_a_local_file_replaced_after_the_sync_waits_for_the_next_sync(local_env):
    version = register_model(local_env, tiny_model_bytes())
    assert materialize(SYNC, None).success
    # new bytes under the old name; and the same bytes with only a new time
    write_image(local_env.test / "hat" / "hat_0.jpg", COLOURS["shoes"], seed=99, size=48)
    touched = local_env.test / "hat" / "hat_1.jpg"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))

    with dg.instance_for_test() as instance:
        first = materialize(["clothing_predictions"], None, instance=instance)
        assert first.success, [e.message for e in first.all_events if e.is_failure]
        said = [r.user_message for r in instance.all_logs(first.run_id)]
    meta = metadata_of(first, "clothing_predictions")
    assert meta["rows_scored"] == 7 and meta["rows_changed_since_sync"] == 2
    assert meta["rows_with_error"] == 0 and meta["rows_left_for_retry"] == 0
    [warning] = [m for m in said if "changed since the catalog was synced" in m]
    assert warning.startswith("2 files changed since the catalog was synced"), warning
    assert "hat/hat_0.jpg: changed since the catalog was synced (size" in warning
    assert "hat/hat_1.jpg: changed since the catalog was synced (modified" in warning
    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    for path in ("hat/hat_0.jpg", "hat/hat_1.jpg"):
        assert pd.isna(table.loc[path, "MODEL_VERSION"]) and pd.isna(table.loc[path, "ERROR"])
    assert len(_scored(local_env, version)) == 7

    second = materialize([*SYNC, "clothing_predictions"], None)  # the sync sees the change
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    assert metadata_of(second, "clothing_predictions")["rows_scored"] == 2
    scored = _scored(local_env, version)
    assert len(scored) == 9 and scored["TYPE"].isin(CLASSES).all()
    assert scored.loc["hat/hat_0.jpg", "SIZE"] == (local_env.test / "hat/hat_0.jpg").stat().st_size


@pytest.mark.timeout(300)
def test_an_s3_object_overwritten_after_the_sync_waits_for_the_next_sync(
    local_env,
    s3_endpoint,  # noqa: F811
    monkeypatch,
):
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", upload(local_env.test, "test"))
    version = register_model(local_env, tiny_model_bytes())
    assert materialize(SYNC, None).success
    key = f"{BUCKET}/test/shoes/shoes_2.jpg"
    old = s3().cat(key)
    new = write_image(local_env.root / "new.jpg", COLOURS["hat"], seed=5).read_bytes()
    new = (new + b"\0" * len(old))[: len(old)]  # same size: only the ETag tells
    s3().pipe(key, new)
    before = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")

    first = materialize(["clothing_predictions"], None)
    assert first.success, [e.message for e in first.all_events if e.is_failure]
    meta = metadata_of(first, "clothing_predictions")
    assert meta["rows_scored"] == 8 and meta["rows_changed_since_sync"] == 1
    assert pd.isna(read_table(local_env, "clothing_test").set_index("RELATIVE_PATH").loc[
        "shoes/shoes_2.jpg", "MODEL_VERSION"
    ])  # fmt: skip

    second = materialize([*SYNC, "clothing_predictions"], None)
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    assert metadata_of(second, "clothing_predictions")["rows_scored"] == 1
    after = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    assert after.loc["shoes/shoes_2.jpg", "MODEL_VERSION"] == version
    assert after.loc["shoes/shoes_2.jpg", "ETAG"] != before.loc["shoes/shoes_2.jpg", "ETAG"]
