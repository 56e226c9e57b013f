"""Stages on S3 for real: moto's S3 server on 127.0.0.1, credentials only from the standard AWS
variables, the whole graph (Dask workers read the objects themselves), ETag-aware sensors, and
no credential in any log, metadata or event."""

from __future__ import annotations

import importlib.util
import io
import json

import dagster as dg
import pytest
from PIL import Image

from clothing_assets.defs.jobs import stages
from clothing_assets.defs.sensors import recorded_version
from clothing_assets.stage import StageLocationError, list_stage, listing_digest
from clothing_assets_tests.support import (
    COLOURS,
    materialize,
    read_table,
    write_image,
)
from clothing_assets_tests.support.automation import Automation
from clothing_assets_tests.support.s3_server import (
    BUCKET,
    FAKE_ACCESS_KEY,
    FAKE_SECRET,
    s3,
    s3_endpoint,  # noqa: F401 - the fixture
    upload,
)

BUCKET_PATH = "clothing-stages"


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs is installed")
def test_a_missing_filesystem_names_the_extra_to_install():
    with pytest.raises(StageLocationError) as raised:
        list_stage("gs://bucket/test", env_var="CLOTHING_TEST_STAGE_URL")
    message = str(raised.value)
    assert 'pip install "clothing_assets[gcs]"' in message
    assert "CLOTHING_TEST_STAGE_URL" in message


def test_s3_listing_keys_sizes_etags_and_times(s3_endpoint, tmp_path):  # noqa: F811
    fs = s3()
    fs.pipe(f"{BUCKET_PATH}/stage/hat/a.jpg", b"a" * 10)
    fs.pipe(f"{BUCKET_PATH}/stage/hat/.hidden.jpg", b"h")
    fs.pipe(f"{BUCKET_PATH}/stage/root.jpg", b"r" * 3)
    listing = list_stage(f"s3://{BUCKET_PATH}/stage").set_index("RELATIVE_PATH")
    assert list(listing.index) == ["hat/a.jpg", "root.jpg"]
    assert listing.loc["hat/a.jpg", "SIZE"] == 10
    assert listing.loc["hat/a.jpg", "FILE_URL"] == f"s3://{BUCKET_PATH}/stage/hat/a.jpg"
    etag = listing.loc["hat/a.jpg", "ETAG"]
    assert etag and '"' not in etag  # S3 quotes ETags; the listing stores the bare value
    assert str(listing["LAST_MODIFIED"].dt.tz) == "UTC"
    assert listing["ERROR"].isna().all()

    fs.pipe(f"{BUCKET_PATH}/stage/hat/a.jpg", b"b" * 10)  # same size: only the ETag must change
    again = list_stage(f"s3://{BUCKET_PATH}/stage").set_index("RELATIVE_PATH")
    assert again.loc["hat/a.jpg", "SIZE"] == 10 and again.loc["hat/a.jpg", "ETAG"] != etag
    assert listing_digest(again.reset_index()) != listing_digest(listing.reset_index())


def _jpeg(colour: tuple[int, int, int], tmp_path, seed: int) -> bytes:
    path = write_image(tmp_path / "scratch" / f"{seed}.jpg", colour, seed=seed)
    data = path.read_bytes()
    Image.open(io.BytesIO(data)).verify()
    return data


def _test_version(instance: dg.DagsterInstance) -> str | None:
    return recorded_version(instance, dg.AssetKey("clothing_dataset"))


def _records_holding(instance: dg.DagsterInstance, needle: str) -> list[str]:
    """Every event record of every run (message, metadata, everything, serialized) that holds
    `needle`."""
    found = []
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            if needle in dg.serialize_value(record) + str(record.user_message):
                found.append(f"{run.run_id}: {record.dagster_event_type}")
    return found


@pytest.mark.slow
def test_s3_stages_sync_score_and_follow_changes(local_env, s3_endpoint, monkeypatch, tmp_path):  # noqa: F811
    train_url = upload(local_env.train, "train")
    test_url = upload(local_env.test, "test")
    monkeypatch.setenv("CLOTHING_TRAIN_STAGE_URL", train_url)
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", test_url)
    with dg.instance_for_test() as instance:
        # the stages observed in the same run, as the jobs do
        first = materialize(stages | dg.AssetSelection.all(), instance=instance)
        assert first.success
        table = read_table(local_env, "clothing_test")
        assert len(table) == 9 and table["MODEL_VERSION"].notna().all()
        assert table["FILE_URL"].str.startswith(f"s3://{BUCKET_PATH}/test/").all()
        before = table.set_index("RELATIVE_PATH")

        automation = Automation(instance)
        automation.evaluate()
        # the run observed both stages: an unchanged stage records nothing and requests nothing
        quiet = automation.observe()
        assert isinstance(quiet, dg.SkipReason), quiet
        assert automation.evaluate() == set()

        fs = s3()
        # overwrite with new bytes (a new ETag), delete, add: each is a new data version
        versions = {_test_version(instance)}
        fs.pipe(f"{BUCKET_PATH}/test/hat/hat_0.jpg", _jpeg(COLOURS["shoes"], tmp_path, 7))
        automation.observe()
        versions.add(_test_version(instance))
        fs.rm(f"{BUCKET_PATH}/test/pants/pants_1.jpg")
        automation.observe()
        versions.add(_test_version(instance))
        fs.pipe(f"{BUCKET_PATH}/test/shoes/added.jpg", _jpeg(COLOURS["shoes"], tmp_path, 8))
        automation.observe()
        versions.add(_test_version(instance))
        assert len(versions) == 4
        requested = automation.evaluate()
        assert requested == {"clothing_test", "clothing_predictions"}

        second = materialize(sorted(requested), run_config=None, instance=instance)
        assert second.success
        after = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
        assert "pants/pants_1.jpg" not in after.index
        assert after.loc["shoes/added.jpg", "TYPE"] is not None
        assert after["MODEL_VERSION"].notna().all() and len(after) == 9
        assert (
            after.loc["hat/hat_0.jpg", "PRED_TIMESTAMP"]
            > before.loc["hat/hat_0.jpg", "PRED_TIMESTAMP"]
        )
        kept = "shoes/shoes_0.jpg"
        assert after.loc[kept, "PRED_TIMESTAMP"] == before.loc[kept, "PRED_TIMESTAMP"]

        # the scan does see the stages' metadata (their location names the bucket) ...
        assert _records_holding(instance, f"s3://{BUCKET_PATH}/test")
        # ... and no credential anywhere, nor in the runs' config and tags
        assert _records_holding(instance, FAKE_SECRET) == []
        assert _records_holding(instance, FAKE_ACCESS_KEY) == []
        runs = json.dumps([dg.serialize_value(r) for r in instance.get_runs()])
        assert FAKE_SECRET not in runs and FAKE_ACCESS_KEY not in runs


def test_the_model_store_on_s3_keeps_versions_immutable_and_checked(s3_endpoint, tmp_path):  # noqa: F811
    """CLOTHING_MODELS_DIR may be an s3:// URL: versions are stored once, read back checked
    against their hash, and deleted only on request (retention)."""
    from clothing_assets.resources.model_store import ModelStoreError, ModelStoreResource

    store = ModelStoreResource(
        directory=f"s3://{BUCKET}/models", cache_directory=str(tmp_path / "cache")
    )
    version = store.put(b"model bytes")
    assert store.uri(version) == f"s3://{BUCKET}/models/versions/{version}.pt"
    assert store.exists(version) and store.get(version) == b"model bytes"
    assert store.put(b"model bytes") == version  # the same bytes: nothing rewritten
    s3().pipe(f"{BUCKET}/models/versions/{version}.pt", b"tampered")
    with pytest.raises(ModelStoreError, match="does not match its version"):
        store.get(version)
    store.delete(version)
    assert not store.exists(version)
    with pytest.raises(ModelStoreError, match="not in the model store"):
        store.get(version)
