"""The model server serves each version with the batch path's runtime: the int8 model when
`auto`'s probe chose it for that version (same labels as `score_batch` with int8, confidence
within 1e-3), torch until a choice exists, and `/model` says which runtime serves and why.
One real server process; the probe's clock is a fixed cost per runtime."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from clothing_assets.ml import runtime
from clothing_assets.ml.runtime_choice import choose_runtime
from clothing_assets.ml.scoring import score_batch
from clothing_assets_tests.support import make_stage
from clothing_assets_tests.system.test_serve import Server, tiny_model, write_model_atomically

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the int8 runtime needs the `int8` extra (onnxruntime, onnx)",
)


def int8_faster(name: str, run) -> float:
    run()
    return {runtime.TORCH: 2.0, runtime.ORT_INT8: 1.0}[name]


def batch_path_chooses(data: bytes, version: str, blobs: list[bytes], cache: Path) -> bytes:
    """What clothing_predictions does under `auto`: make (and cache) the int8 model, probe,
    keep the choice; the bytes its workers would load."""

    def int8() -> bytes:
        return runtime.scoring_model_bytes(data, version, runtime.ORT_INT8, lambda: blobs, cache)

    choice = choose_runtime(data, version, int8, lambda: blobs, cache, measure=int8_faster)
    assert choice.runtime == runtime.ORT_INT8, choice
    return int8()


def wait_runtime(srv: Server, version: str, wanted: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, info = srv.request("GET", "/model")
        if status == 200 and (info["model_version"], info["runtime"]) == (version, wanted):
            return info
        time.sleep(0.1)
    raise AssertionError(f"never served {version} with {wanted}:\n{srv.log.read_text()}")


def assert_same_answers(srv: Server, scored: list[dict], files: list[Path]) -> None:
    for file, expected in zip(files, scored, strict=True):
        status, answer = srv.predict(file.read_bytes())
        assert status == 200, answer
        assert answer["label"] == expected["TYPE"], file
        assert abs(answer["confidence"] - expected["CONFIDENCE"]) < 1e-3, file


def rows(files: list[Path]) -> list[dict]:
    return [{"RELATIVE_PATH": f.name, "URL": str(f), "SIZE": 0, "LAST_MODIFIED": None}
            for f in files]  # fmt: skip


@pytest.mark.timeout(300)
def test_the_server_serves_the_batch_paths_runtime_and_says_which(tmp_path):
    files = make_stage(tmp_path / "images", per_class=4, seed=8)
    blobs = [f.read_bytes() for f in files]
    cache, models = tmp_path / "cache", tmp_path / "models"
    first = tiny_model(seed=0)
    version = write_model_atomically(models, first)
    int8 = batch_path_chooses(first, version, blobs, cache)

    env = {"CLOTHING_SCORING_RUNTIME": "auto", "CLOTHING_CACHE_DIR": str(cache)}
    srv = Server(models, tmp_path / "server.log", env=env)
    try:
        srv.wait_listening()
        info = wait_runtime(srv, version, runtime.ORT_INT8)
        assert "auto" in info["runtime_note"] and info["device"] == "cpu"
        scored = score_batch(int8, version, rows(files), runtime=runtime.ORT_INT8)
        assert_same_answers(srv, scored, files)

        # a new version the batch path has not chosen for yet: torch, and why
        second = tiny_model(seed=1)
        newer = write_model_atomically(models, second)
        info = wait_runtime(srv, newer, runtime.TORCH)
        assert "has not chosen" in info["runtime_note"]
        assert_same_answers(srv, score_batch(second, newer, rows(files)), files)

        # once it has, the server switches to its runtime without a restart
        int8 = batch_path_chooses(second, newer, blobs, cache)
        wait_runtime(srv, newer, runtime.ORT_INT8)
        scored = score_batch(int8, newer, rows(files), runtime=runtime.ORT_INT8)
        assert_same_answers(srv, scored, files)
    finally:
        srv.stop()
