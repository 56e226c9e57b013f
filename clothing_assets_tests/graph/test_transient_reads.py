"""A file that cannot be read for the moment (a folder briefly missing, an object store's
error after its retries) is left unstamped and read again by the next run; a file that
cannot be decoded keeps its ERROR for good."""

from __future__ import annotations

import shutil
import socket

import dagster as dg
import fsspec
import pytest

from clothing_assets.ml.scoring import DEFERRED_TRANSIENT, score_batch
from clothing_assets.stage import read_bytes
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

SYNC = ["clothing_dataset", "clothing_test"]


def _row(path, name: str) -> dict:
    return {"RELATIVE_PATH": name, "SIZE": 0, "LAST_MODIFIED": None, "URL": str(path)}


def test_a_missing_file_is_deferred_and_an_undecodable_one_gets_its_error(tmp_path):
    good = write_image(tmp_path / "good.jpg", COLOURS["hat"], seed=1)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"not an image at all" * 10)
    rows = [
        _row(good, "good.jpg"),
        _row(garbage, "garbage.jpg"),
        _row(tmp_path / "gone" / "missing.jpg", "gone/missing.jpg"),
        _row(tmp_path / "absent.jpg", "absent.jpg"),
    ]
    out = {r["RELATIVE_PATH"]: r for r in score_batch(tiny_model_bytes(), "v1", rows)}
    assert out["good.jpg"]["TYPE"] in CLASSES and out["good.jpg"]["DEFERRED"] is None
    assert out["garbage.jpg"]["ERROR"].startswith("not an image")
    assert out["garbage.jpg"]["DEFERRED"] is None  # final: written with the model's version
    missing = out["gone/missing.jpg"]
    assert missing["DEFERRED"] == DEFERRED_TRANSIENT and missing["TYPE"] is None
    assert missing["ERROR"].startswith("unreadable file: [Errno 2]"), missing["ERROR"]
    # named by the whole path that is missing, not by its last name alone
    assert missing["ERROR"].endswith(f"'{tmp_path / 'gone'}'"), missing["ERROR"]
    absent = out["absent.jpg"]
    assert absent["DEFERRED"] == DEFERRED_TRANSIENT
    assert absent["ERROR"].endswith(f"'{tmp_path / 'absent.jpg'}'"), absent["ERROR"]


def _messages(instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult) -> list[str]:
    return [record.user_message for record in instance.all_logs(result.run_id)]


@pytest.mark.timeout(300)
def test_a_folder_missing_while_scoring_is_read_again_by_the_next_run(local_env, tmp_path):
    version = register_model(local_env, tiny_model_bytes())
    assert materialize(SYNC, None).success
    away = tmp_path / "away"
    shutil.move(local_env.test / "pants", away)  # gone for the moment, still in the catalog

    with dg.instance_for_test() as instance:
        first = materialize(["clothing_predictions"], None, instance=instance)
        assert first.success, [e.message for e in first.all_events if e.is_failure]
        meta = metadata_of(first, "clothing_predictions")
        assert meta["rows_scored"] == 6 and meta["rows_left_for_retry"] == 3
        assert meta["rows_with_error"] == 0
        [said] = [m for m in _messages(instance, first) if "could not be read" in m]
        assert said.startswith("3 files could not be read for the moment"), said
        assert "pants/pants_0.jpg: unreadable file" in said

    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    pants = table[table.index.str.startswith("pants/")]
    assert len(pants) == 3 and pants["MODEL_VERSION"].isna().all()
    assert pants["ERROR"].isna().all() and pants["TYPE"].isna().all()
    others = table.drop(index=pants.index)
    assert (others["MODEL_VERSION"] == version).all() and others["TYPE"].isin(CLASSES).all()

    shutil.move(away, local_env.test / "pants")  # back: the next run scores what it missed
    second = materialize(["clothing_predictions"], None)
    assert second.success, [e.message for e in second.all_events if e.is_failure]
    meta = metadata_of(second, "clothing_predictions")
    assert meta["rows_scored"] == 3 and meta["rows_left_for_retry"] == 0
    table = read_table(local_env, "clothing_test")
    assert (table["MODEL_VERSION"] == version).all() and table["TYPE"].isin(CLASSES).all()


def test_an_unreachable_object_store_defers_the_row_and_fails_nothing(tmp_path, monkeypatch):
    # the object store's own network errors (botocore's, aiohttp's) are no OSError: past the
    # client's retries they would fail the whole batch, and the step with it
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # one attempt each, so that the test does not sit through the clients' backoff
    s3fs = pytest.importorskip("s3fs")  # the s3 extra
    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)
    monkeypatch.setitem(
        fsspec.config.conf, "s3", {"config_kwargs": {"retries": {"max_attempts": 1}}}
    )
    fsspec.filesystem("s3").clear_instance_cache()
    try:
        with pytest.raises(OSError, match="EndpointConnectionError"):
            read_bytes("s3://clothing-stages/test/hat/a.jpg")
        good = write_image(tmp_path / "good.jpg", COLOURS["hat"], seed=1)
        rows = [
            _row(good, "good.jpg"),
            {**_row("s3://clothing-stages/test/hat/a.jpg", "hat/a.jpg"), "ETAG": "abc"},
        ]
        out = {r["RELATIVE_PATH"]: r for r in score_batch(tiny_model_bytes(), "v1", rows)}
    finally:
        fsspec.filesystem("s3").clear_instance_cache()
    assert out["good.jpg"]["TYPE"] in CLASSES
    assert out["hat/a.jpg"]["DEFERRED"] == DEFERRED_TRANSIENT
    assert out["hat/a.jpg"]["ERROR"].startswith("unreadable file: EndpointConnectionError")
