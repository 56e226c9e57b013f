"""`auto`'s runtime chosen by a timed probe (`ml/runtime_choice.py`): the faster admitted
runtime wins, int8 only within its tolerance, the choice is kept per model version and CPU
kind and not measured again, and an int8 model that fails to build or load leaves torch,
with the reason recorded. The probe runs the real runtimes; only its clock is replaced, by a
fixed cost per runtime, so that which one is faster does not depend on the machine."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from clothing_assets.ml import runtime
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.runtime_choice import (
    choice_file,
    choose_runtime,
    recorded_choice,
    serving_runtime,
)
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_store import file_version
from clothing_assets_tests.support import make_stage
from clothing_assets_tests.support.models import TINY_CLASSES, tiny_model

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the int8 runtime needs the `int8` extra (onnxruntime, onnx)",
)
INT8 = runtime.ORT_INT8


def always(index: int) -> bytes:
    """A resnet18 file at 32 px over TINY_CLASSES that answers class `index` for every image
    (seeded body, a head of zero weights and one large bias)."""
    torch.manual_seed(5)
    model = build_model("resnet18", len(TINY_CLASSES), weights="none")
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()
        model.fc.bias[index] = 8.0
    settings = TrainSettings(architecture="resnet18", image_size=32)
    return ModelFile.of_training(model.state_dict(), TINY_CLASSES, settings).to_bytes()


@pytest.fixture(scope="module")
def blobs(tmp_path_factory) -> list[bytes]:
    files = make_stage(tmp_path_factory.mktemp("probe"), per_class=6, seed=3)
    return [f.read_bytes() for f in files]


@pytest.fixture(scope="module")
def model(blobs) -> tuple[bytes, str, bytes]:
    """(torch model file, its version, its int8 model)."""
    data, _ = tiny_model(0)
    return data, file_version(data), runtime.int8_model_bytes(data, blobs)


class Costs:
    """The probe's `measure`: runs the batch (the real runtime) and reports a fixed cost."""

    def __init__(self, **costs: float) -> None:
        self.costs = {k.replace("_", "-"): v for k, v in costs.items()}
        self.calls: list[str] = []

    def __call__(self, name: str, run) -> float:
        assert run().shape[1] == len(TINY_CLASSES)  # the runtime really classified the batch
        self.calls.append(name)
        return self.costs[name]


def choose(model, blobs, cache: Path, measure, *, kind: str = "AVX2", int8=None):
    data, version, made = model
    return choose_runtime(data, version, int8 or (lambda: made), lambda: blobs, cache,
                          kind=kind, measure=measure)  # fmt: skip


@pytest.mark.parametrize(
    ("costs", "faster"),
    [({"torch": 2.0, "onnxruntime_int8": 1.0}, INT8),
     ({"torch": 1.0, "onnxruntime_int8": 2.0}, runtime.TORCH)],
)  # fmt: skip
def test_the_probe_picks_the_faster_runtime(model, blobs, tmp_path, costs, faster):
    measure = Costs(**costs)
    choice = choose(model, blobs, tmp_path, measure)
    assert choice.runtime == faster
    assert set(measure.calls) == {runtime.TORCH, INT8} and len(measure.calls) <= 6
    assert choice.agreement >= 0.9 and choice.confidence_gap <= 0.05 and not choice.left_out
    speeds = choice.seconds_per_image  # 18 images in batches of 16: 16 + 2 + 16 timed
    assert speeds[runtime.TORCH] / speeds[INT8] == pytest.approx(costs["torch"] / costs[
        "onnxruntime_int8"])  # fmt: skip


def test_the_choice_is_kept_per_model_version_and_cpu_kind(model, blobs, tmp_path):
    first = Costs(torch=2.0, onnxruntime_int8=1.0)
    choice = choose(model, blobs, tmp_path, first)
    kept = choice_file(tmp_path, model[1], "AVX2")
    assert kept.is_file() and json.loads(kept.read_bytes())["runtime"] == INT8

    again = Costs(torch=1.0, onnxruntime_int8=2.0)  # would now choose torch, if it measured
    assert choose(model, blobs, tmp_path, again) == choice and again.calls == []

    other_kind = Costs(torch=1.0, onnxruntime_int8=2.0)
    assert choose(model, blobs, tmp_path, other_kind, kind="AMX-BF16").runtime == runtime.TORCH
    assert other_kind.calls and choice_file(tmp_path, model[1], "AMX-BF16").is_file()

    # another model file under the same version name is not answered from its choice
    other = (tiny_model(1)[0], model[1], model[2])
    assert recorded_choice(tmp_path, model[1], "0" * 64, "AVX2") is None
    measured = Costs(torch=1.0, onnxruntime_int8=2.0)
    choose(other, blobs, tmp_path, measured)
    assert measured.calls


@pytest.mark.parametrize(
    "broken",
    [
        lambda: b"not an int8 model",
        lambda: runtime.quantize_int8(b"not an onnx graph", torch.zeros(1, 3, 32, 32)),
    ],
    ids=["unloadable", "unbuildable"],
)
def test_an_int8_model_that_fails_to_build_or_load_leaves_torch_and_says_why(
    model, blobs, tmp_path, broken
):
    measure = Costs(torch=2.0, onnxruntime_int8=1.0)
    choice = choose(model, blobs, tmp_path, measure, int8=broken)
    assert choice.runtime == runtime.TORCH and measure.calls == []  # nothing to compare
    assert "could not be built or loaded" in choice.left_out[INT8]
    recorded = json.loads(choice_file(tmp_path, model[1], "AVX2").read_bytes())
    assert recorded["left_out"] == choice.left_out and recorded["runtime"] == runtime.TORCH


def test_int8_answering_otherwise_is_not_chosen_however_fast(blobs, tmp_path):
    """The int8 model of a model that always answers the second class, offered for one that
    always answers the first: faster, but outside the tolerance."""
    data = always(0)
    foreign = runtime.int8_model_bytes(always(1), blobs[:4])
    measure = Costs(torch=9.0, onnxruntime_int8=1.0)
    choice = choose((data, file_version(data), foreign), blobs, tmp_path, measure)
    assert choice.runtime == runtime.TORCH and choice.agreement == 0.0
    assert "outside int8's tolerance" in choice.left_out[INT8]


def test_the_server_is_told_the_batch_paths_runtime(model, blobs, tmp_path):
    data, version, _ = model
    sha = hashlib.sha256(data).hexdigest()
    assert serving_runtime("auto", version, sha, tmp_path)[0] == runtime.TORCH  # not chosen yet
    choose(model, blobs, tmp_path, Costs(torch=2.0, onnxruntime_int8=1.0), kind="AVX512-BF16")
    # measured on another kind than this process's: still the batch path's choice
    served, why = serving_runtime("auto", version, sha, tmp_path)
    assert served == INT8 and "AVX512-BF16" in why
    assert serving_runtime("torch", version, sha, tmp_path)[0] == runtime.TORCH
    assert serving_runtime("auto", version, sha, tmp_path, gpu=True)[0] == runtime.TORCH
