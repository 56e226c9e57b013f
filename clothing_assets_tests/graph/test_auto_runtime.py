"""CLOTHING_SCORING_RUNTIME=auto end to end: clothing_predictions measures torch and int8 on
this CPU once per model version, scores with the choice and keeps it; a later run reuses it
without measuring; the model server, reading the same registry and cache, serves that runtime
and gives the answers clothing_predictions wrote (same label, confidence within 1e-3).
Real DuckDB, Dask LocalCluster, Dagster runs and a real server process."""

from __future__ import annotations

import hashlib
import importlib.util

import pytest

from clothing_assets.ml import runtime
from clothing_assets.ml.runtime_choice import choice_file, recorded_choice
from clothing_assets_tests.support import (
    COLOURS,
    materialize,
    metadata_of,
    read_table,
    register_model,
    step_failure,
    write_image,
)
from clothing_assets_tests.support.models import tiny_model
from clothing_assets_tests.system.test_serve import Server

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the int8 runtime needs the `int8` extra (onnxruntime, onnx)",
)
SCORE = ["clothing_dataset_train", "clothing_train", "clothing_dataset", "clothing_test",
         "clothing_predictions"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_auto_measures_once_and_the_server_answers_as_scoring_did(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_SCORING_RUNTIME", "auto")
    monkeypatch.setenv("CLOTHING_DASK_WORKERS", "1")
    data, _ = tiny_model(0)
    version = register_model(local_env, data)

    first = materialize(SCORE, None)
    assert first.success, step_failure(first)
    choice = recorded_choice(local_env.cache, version, hashlib.sha256(data).hexdigest())
    assert choice is not None and set(choice.seconds_per_image) == {runtime.TORCH, runtime.ORT_INT8}
    assert metadata_of(first, "clothing_predictions")["runtime"] == choice.runtime
    kept = choice_file(local_env.cache, version, choice.cpu_kind)
    stamp = kept.stat().st_mtime_ns

    write_image(local_env.test / "hat" / "late.jpg", COLOURS["hat"], seed=77)
    second = materialize(SCORE[2:], None)
    assert second.success, step_failure(second)
    assert metadata_of(second, "clothing_predictions")["runtime"] == choice.runtime
    assert kept.stat().st_mtime_ns == stamp  # not measured again

    scored = read_table(local_env, "clothing_test")
    assert scored["TYPE"].notna().all() and len(scored) == 10
    srv = Server(None, local_env.root / "server.log")
    try:
        srv.wait_listening()
        srv.wait_version(version)
        assert srv.request("GET", "/model")[1]["runtime"] == choice.runtime
        for row in scored.itertuples():
            status, answer = srv.predict((local_env.test / row.RELATIVE_PATH).read_bytes())
            assert status == 200 and answer["label"] == row.TYPE, row.RELATIVE_PATH
            assert abs(answer["confidence"] - row.CONFIDENCE) < 1e-3, row.RELATIVE_PATH
    finally:
        srv.stop()
