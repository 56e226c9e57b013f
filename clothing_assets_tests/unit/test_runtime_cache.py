"""The int8 runtime's cache (`runtime.scoring_model_bytes`): a cached int8 model is used only
when it loads and was made from the very model file being scored; anything else is rebuilt,
and a cache write that fails leaves no file behind and does not stop scoring."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import os
from pathlib import Path

import pytest
import torch

from clothing_assets.ml import runtime
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.scoring import score_batch
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_store import file_version
from clothing_assets_tests.support import CLASSES, make_stage
from clothing_assets_tests.support.disks import small_tmpfs

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the int8 runtime needs the `int8` extra (onnxruntime, onnx)",
)
OTHER_CLASSES = ("coat", "dress", "skirt")


def model_file(seed: int, classes: tuple[str, ...]) -> bytes:
    """A small mobilenet_v3_small model file at 32 px with seeded random weights."""
    torch.manual_seed(seed)
    settings = TrainSettings(architecture="mobilenet_v3_small", weights="none", image_size=32)
    model = build_model("mobilenet_v3_small", len(classes), weights="none", image_size=32)
    return ModelFile.of_training(model.state_dict(), classes, settings).to_bytes()


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return make_stage(tmp_path_factory.mktemp("images"), per_class=3, seed=4)


@pytest.fixture
def calibration(images):
    """The calibration callback `scoring_model_bytes` takes; `.calls` counts int8 builds."""

    def read() -> list[bytes]:
        read.calls += 1
        return [f.read_bytes() for f in images]

    read.calls = 0
    return read


def cached_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "runtimes").iterdir())


def int8_for(data: bytes, calibration, cache_dir: Path) -> bytes:
    return runtime.scoring_model_bytes(
        data, file_version(data), runtime.ORT_INT8, calibration, cache_dir
    )


def test_a_planted_int8_model_for_other_weights_is_refused_and_rebuilt(
    tmp_path, images, calibration, caplog
):
    """The champion's cache file replaced by an int8 model of other weights and labels: the
    scorer rebuilds it from the champion, and scoring writes the champion's labels."""
    champion, other = model_file(0, CLASSES), model_file(1, OTHER_CLASSES)
    int8_for(champion, calibration, tmp_path)
    (cached,) = cached_files(tmp_path)
    planted = runtime.int8_model_bytes(other, [f.read_bytes() for f in images])
    cached.write_bytes(planted)
    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        shipped = int8_for(champion, calibration, tmp_path)
    assert shipped != planted and calibration.calls == 2
    payload = torch.load(io.BytesIO(shipped), weights_only=True)
    assert payload["model_sha256"] == hashlib.sha256(champion).hexdigest()
    assert payload["classes"] == list(CLASSES)
    assert cached.read_bytes() == shipped  # the cache holds the rebuilt model now
    rows = [{"RELATIVE_PATH": f.name, "URL": str(f), "SIZE": 0, "LAST_MODIFIED": None}
            for f in images]  # fmt: skip
    scored = score_batch(shipped, file_version(champion), rows, runtime=runtime.ORT_INT8)
    assert {r["TYPE"] for r in scored} <= set(CLASSES)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "rebuilding" in line and str(cached) in line and "\n" not in line


def torn(data: bytes) -> bytes:
    """A crash mid-write without the atomic rename: the first half."""
    return data[: len(data) // 2]


def flipped(data: bytes) -> bytes:
    """One bit flipped at two thirds of the file, inside the ONNX graph (bit rot)."""
    at = 2 * len(data) // 3
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]


@pytest.mark.parametrize("spoil", [torn, flipped])
def test_a_damaged_cache_file_is_rebuilt_once_and_then_used(tmp_path, calibration, caplog, spoil):
    data = model_file(0, CLASSES)
    whole = int8_for(data, calibration, tmp_path)
    (cached,) = cached_files(tmp_path)
    cached.write_bytes(spoil(whole))
    with caplog.at_level(logging.WARNING, logger=runtime.__name__):
        rebuilt = int8_for(data, calibration, tmp_path)
    runtime.load_int8_model(rebuilt)  # loads: not the torn bytes
    assert calibration.calls == 2 and cached.read_bytes() == rebuilt
    (line,) = [r.getMessage() for r in caplog.records]
    assert "rebuilding" in line and str(cached) in line and "\n" not in line
    assert int8_for(data, calibration, tmp_path) == rebuilt and calibration.calls == 2


def test_a_cache_write_the_full_disk_refuses_leaves_nothing_and_scoring_goes_on(
    tmp_path, calibration, caplog
):
    """On a real 1 MiB tmpfs: the int8 model (~2.5 MB) does not fit."""
    data = model_file(0, CLASSES)
    with small_tmpfs(tmp_path / "small") as disk:
        with caplog.at_level(logging.WARNING, logger=runtime.__name__):
            made = int8_for(data, calibration, disk)
        runtime.load_int8_model(made)
        assert os.listdir(disk / "runtimes") == []
        (line,) = [r.getMessage() for r in caplog.records]
        assert "not cached" in line and "disk is full" in line
