"""image_embeddings and the test-stage embeddings that scoring writes in the same pass: every
cataloged image embedded once per champion, incrementally, with a per-file ERROR."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from clothing_assets.ml.embeddings import embed_batch
from clothing_assets.ml.images import prepare
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.phash import image_hashes
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

SYNC = ["clothing_dataset", "clothing_test", "clothing_dataset_train", "clothing_train"]


@pytest.mark.slow  # two runs on a Dask LocalCluster
@pytest.mark.timeout(300)
def test_scoring_embeds_the_test_stage_and_image_embeddings_the_rest(local_env, monkeypatch):
    # torch scores and embeds in one pass on every CPU (the int8 graph answers logits alone)
    monkeypatch.setenv("CLOTHING_SCORING_RUNTIME", "torch")
    model_bytes = tiny_model_bytes()
    version = register_model(local_env, model_bytes)
    # one run, one cluster: scoring, then image_embeddings
    first = materialize([*SYNC, "clothing_predictions", "image_embeddings"], None)
    assert first.success, [e.message for e in first.all_events if e.is_failure]

    # scoring wrote the test stage's embeddings from the same read: hash of the same bytes
    table = read_table(local_env, "clothing_embeddings")
    table = table[table["STAGE"] == "test"]
    assert len(table) == 3 * len(CLASSES)
    assert set(table["MODEL_VERSION"]) == {version} and table["ERROR"].isna().all()
    row = table.iloc[0]
    data = (local_env.test / row["RELATIVE_PATH"]).read_bytes()
    assert row["CONTENT_SHA256"] == hashlib.sha256(data).hexdigest()
    stored = np.asarray(row["EMBEDDING"], dtype=np.float32)
    assert stored.shape == (512,) and np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-4)
    # the same vector the server computes for the same bytes (`embed_batch`), up to autocast
    model_file = ModelFile.load(model_bytes)
    image = prepare(data, model_file.cache_size)
    local = embed_batch(model_file.build(), model_file.eval_preset()(image[None]))[0]
    assert float(stored @ local) > 0.99
    # and the perceptual hashes of that decode
    whole, centre = image_hashes(image[None])
    assert (row["PHASH"], row["PHASH_CENTER"]) == (whole[0], centre[0])

    meta = metadata_of(first, "image_embeddings")
    # only the train stage is read: the test images were embedded while they were scored
    assert meta["embedded"] == 6 * len(CLASSES) and meta["errors"] == 0
    assert meta["train_embeddings"] == 6 * len(CLASSES)
    assert meta["test_embeddings"] == 3 * len(CLASSES)
    assert meta["dimension"] == 512 and meta["model_version"] == version
    assert meta["embedding_map"].startswith("![embedding map](data:image/png;base64,")

    # a changed file and an undecodable one: only those two are read again
    write_image(local_env.train / "hat" / "hat_0.jpg", COLOURS["shoes"], seed=7, size=48)
    (local_env.train / "hat" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    again = materialize([*SYNC, "image_embeddings"], None)
    assert again.success, [e.message for e in again.all_events if e.is_failure]
    meta = metadata_of(again, "image_embeddings")
    assert (meta["embedded"], meta["errors"], meta["stale_deleted"]) == (2, 1, 1)
    table = read_table(local_env, "clothing_embeddings").set_index(["STAGE", "RELATIVE_PATH"])
    broken = table.loc[("train", "hat/broken.jpg")]
    assert "decode" in broken["ERROR"] or "image" in broken["ERROR"], broken["ERROR"]
    assert not isinstance(broken["EMBEDDING"], list | np.ndarray)
    assert table["PHASH"].notna().sum() == len(table) - 1  # every embedding is hashed
    changed = (local_env.train / "hat" / "hat_0.jpg").read_bytes()
    assert table.loc[("train", "hat/hat_0.jpg"), "CONTENT_SHA256"] == (
        hashlib.sha256(changed).hexdigest()
    )
    nothing = materialize(["image_embeddings"], None)  # nothing to read: no cluster starts
    assert metadata_of(nothing, "image_embeddings")["embedded"] == 0


@pytest.mark.slow  # three runs, two on a Dask LocalCluster
@pytest.mark.timeout(300)
def test_a_file_gone_while_embedding_is_said_and_read_by_the_next_run(local_env, tmp_path):
    import shutil

    import dagster as dg

    register_model(local_env, tiny_model_bytes())
    write_image(local_env.train / "pants" / "pants_new.jpg", COLOURS["pants"], seed=9)
    assert materialize(SYNC, None).success
    away = tmp_path / "pants_new.jpg"
    shutil.move(local_env.train / "pants" / "pants_new.jpg", away)  # still in the catalog

    with dg.instance_for_test() as instance:
        gone = materialize(["image_embeddings"], None, instance=instance)
        assert gone.success, [e.message for e in gone.all_events if e.is_failure]
        meta = metadata_of(gone, "image_embeddings")
        every_other = 6 * len(CLASSES) + 3 * len(CLASSES)  # both stages' other images
        assert (meta["embedded"], meta["errors"], meta["left_for_next_run"]) == (every_other, 0, 1)
        said = [r.user_message for r in instance.all_logs(gone.run_id)]
        [warning] = [m for m in said if "could not be read" in m]
        assert warning.startswith("train: 1 files could not be read for the moment"), warning
        assert "pants/pants_new.jpg: unreadable file" in warning
        assert "| train | 18 | 0 | 1 | 18 |" in meta["summary"]

    shutil.move(away, local_env.train / "pants" / "pants_new.jpg")
    back = metadata_of(materialize(["image_embeddings"], None), "image_embeddings")
    assert (back["embedded"], back["left_for_next_run"], back["train_embeddings"]) == (1, 0, 19)
