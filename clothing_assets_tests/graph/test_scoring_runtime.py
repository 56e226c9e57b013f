"""The int8 scoring runtime (ml/runtime.py): same labels as torch within int8's tolerance, made
once per model version and loaded once per worker, and a clear message where ONNX Runtime is
missing. The first two need the `int8` extra (in `dev`, so CI has it)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
from pathlib import Path

import pytest
import torch

from clothing_assets.ml import runtime
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.scoring import loaded_versions, score_batch, warm_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_store import file_version
from clothing_assets_tests.support import CLASSES, make_stage

needs_ort = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="the int8 runtime needs the `int8` extra (onnxruntime, onnx)",
)


def small_model(architecture: str = "resnet18") -> bytes:
    """A model file at 32 px; resnet18 with random weights, seeded (int8 error does not need a
    trained model to show, only non-trivial activations), or EfficientNet-Lite0 from its
    ImageNet weights with a random head."""
    torch.manual_seed(0)
    settings = TrainSettings(architecture=architecture, image_size=32)
    model = build_model(architecture, len(CLASSES), weights="none" if architecture == "resnet18"
                        else "imagenet", image_size=32)  # fmt: skip
    return ModelFile.of_training(model.state_dict(), CLASSES, settings).to_bytes()


def rows_of(files: list[Path]) -> list[dict]:
    return [{"RELATIVE_PATH": str(f), "URL": str(f), "SIZE": 0, "LAST_MODIFIED": None}
            for f in files]  # fmt: skip


@pytest.fixture(scope="module", params=["resnet18", "efficientnet_lite0"])
def int8_model(tmp_path_factory, request) -> tuple[bytes, bytes, list[Path]]:
    """(torch model file, its int8 model, 30 test images), calibrated on 24 other images; for
    resnet18 and for the default architecture (depthwise convolutions, TF-style padding)."""
    root = tmp_path_factory.mktemp("images")
    calibration = make_stage(root / "train", per_class=8, seed=1)
    data = small_model(request.param)
    int8 = runtime.int8_model_bytes(data, [f.read_bytes() for f in calibration])
    return data, int8, make_stage(root / "test", per_class=10, seed=2)


@needs_ort
def test_int8_labels_agree_with_torch(int8_model):
    """Static int8 moves probabilities by a few hundredths: at least 90% of the labels and
    every probability within 0.05 of torch fp32 (measured here: all labels, < 0.02)."""
    data, int8, files = int8_model
    version = file_version(data)
    fp32 = score_batch(data, version, rows_of(files))
    q = score_batch(int8, version, rows_of(files), runtime=runtime.ORT_INT8)
    assert not any(r["ERROR"] for r in fp32 + q)
    agree = sum(a["TYPE"] == b["TYPE"] for a, b in zip(fp32, q, strict=True)) / len(files)
    assert agree >= 0.9, agree
    same = [(a, b) for a, b in zip(fp32, q, strict=True) if a["TYPE"] == b["TYPE"]]
    assert max(abs(a["CONFIDENCE"] - b["CONFIDENCE"]) for a, b in same) <= 0.05


@needs_ort
def test_int8_keeps_the_classifier_in_fp32_and_the_stem_as_measured(int8_model):
    """Every convolution after the first reads dequantized int8 weights, the classifier fp32
    ones; the first convolution is int8 exactly when the int8 model records that quantizing it
    kept the calibration images' probabilities within STEM_TOLERANCE of the fp32 stem's."""
    import onnx

    payload = torch.load(io.BytesIO(int8_model[1]), weights_only=True)
    graph = onnx.load_from_string(payload["onnx"].numpy().tobytes()).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    heads = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    assert heads[-1].input[1] not in dequantized
    assert len(convs) > 10 and all(c.input[1] in dequantized for c in convs[1:])
    kept, whole = payload["distance_fp32_stem"], payload["distance_int8_stem"]
    assert 0 < kept < 0.5 and 0 < whole < 0.5  # measured, and small
    int8_stem = runtime.stem_in_int8(kept, whole)
    assert payload["stem"] == ("int8" if int8_stem else "fp32")
    assert (convs[0].input[1] in dequantized) == int8_stem


@pytest.mark.parametrize(
    ("fp32_stem", "int8_stem", "quantized"),
    [(0.010, 0.0095, True), (0.010, 0.011, True), (0.010, 0.0115, False), (0.010, 0.017, False)],
)
def test_a_stem_that_moves_the_answers_stays_fp32(fp32_stem, int8_stem, quantized):
    assert runtime.stem_in_int8(fp32_stem, int8_stem) is quantized


def test_probability_distance_is_the_mean_largest_change():
    identity = lambda batch: batch  # noqa: E731 -- the logits are the batch itself
    reference = torch.zeros(2, 2)  # probabilities 0.5 / 0.5
    moved = torch.tensor([[0.0, 0.0], [0.0, 2.0]])  # the second: 0.119 / 0.881
    assert runtime.probability_distance(identity, reference, moved) == pytest.approx(
        (0.0 + (0.5 - 1 / (1 + 2.718281828**2))) / 2, abs=1e-6
    )


@needs_ort
def test_the_int8_session_pools_the_fp32_stem_before_quantizing(tmp_path):
    """resnet18 with its stem in fp32: the max pool after it reads the fp32 stem's output, as
    OnnxClassifier's session optimizes the graph (ONNX Runtime's uint8 pooling in NCHW is the
    slow kernel)."""
    import onnx
    import onnxruntime as ort

    model_file = ModelFile.load(small_model("resnet18"))
    calibration = torch.randn(16, 3, 32, 32)
    onnx_model = runtime.export_onnx(model_file.build(), 32)
    prepared = runtime.prepare_for_quantization(onnx_model, tmp_path)
    int8 = runtime.quantize_qdq(prepared, calibration, 16, stem=True)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(
        int8, options, providers=["CPUExecutionProvider"],
        disabled_optimizers=runtime.DISABLED_OPTIMIZERS,
    )  # fmt: skip
    nodes = onnx.load(options.optimized_model_filepath).graph.node
    quantized = {o for n in nodes if n.op_type == "QuantizeLinear" for o in n.output}
    (pool,) = [n for n in nodes if n.op_type == "MaxPool"]
    assert pool.input[0] not in quantized


@needs_ort
def test_int8_model_made_once_and_loaded_once_per_worker(int8_model, tmp_path):
    from distributed import Client, LocalCluster

    data, int8, files = int8_model
    version, calls = file_version(data), []

    def calibration() -> list[bytes]:
        calls.append(1)
        return [f.read_bytes() for f in files[:8]]

    made = [runtime.scoring_model_bytes(data, version, runtime.ORT_INT8, calibration, tmp_path)
            for _ in range(2)]  # fmt: skip
    assert calls == [1] and made[0] == made[1]  # the second comes from the cache
    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                     dashboard_address=None) as local,
        Client(local) as client,
    ):  # fmt: skip
        shipped = client.scatter(made[0], broadcast=True)
        client.submit(warm_model, shipped, version, runtime=runtime.ORT_INT8, pure=False).result()
        session = client.run(
            lambda: id(
                __import__("clothing_assets.ml.scoring").ml.scoring._MODELS[
                    f"{version}@cpu@{runtime.ORT_INT8}"
                ][0]
            )
        )
        batches = [
            client.submit(
                score_batch,
                None,
                version,
                rows_of(files[i : i + 5]),
                runtime=runtime.ORT_INT8,
                pure=False,
            )
            for i in range(0, 30, 5)
        ]
        results = [r for b in client.gather(batches) for r in b]
        assert len(results) == 30 and all(r["TYPE"] in CLASSES for r in results)
        # the same ONNX Runtime session scored every batch, and the worker says which runtime it
        # holds
        assert (
            client.run(
                lambda: id(
                    __import__("clothing_assets.ml.scoring").ml.scoring._MODELS[
                        f"{version}@cpu@{runtime.ORT_INT8}"
                    ][0]
                )
            )
            == session
        )
        assert list(client.run(loaded_versions).values()) == [[f"{version}@{runtime.ORT_INT8}"]]


def test_missing_onnxruntime_falls_back_or_says_what_to_install(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "missing_packages", lambda: ["onnxruntime"])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # a kind where `auto` wants int8
    with caplog.at_level(logging.INFO, logger=runtime.__name__):
        assert runtime.resolve_runtime("auto") == runtime.TORCH
    assert "onnxruntime not installed" in caplog.text and "int8" in caplog.text
    with pytest.raises(runtime.RuntimeUnavailable, match=r"clothing-assets\[int8\]"):
        runtime.resolve_runtime(runtime.ORT_INT8)
    fake = io.BytesIO()
    graph = torch.zeros(1, dtype=torch.uint8)
    digest = hashlib.sha256(graph.numpy().tobytes()).hexdigest()
    torch.save({"format": runtime.INT8_FORMAT, "onnx": graph, "onnx_sha256": digest}, fake)
    with pytest.raises(runtime.RuntimeUnavailable, match="install the `int8` extra"):
        runtime.load_int8_model(fake.getvalue())
    # a GPU scores with torch whatever is installed
    assert runtime.resolve_runtime("auto", gpu=True) == runtime.TORCH


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE_BF16"])
def test_auto_scores_int8_on_avx2_and_avx512_bf16(monkeypatch, isa):
    # the kind follows oneDNN's cap, so this machine stands in for a CPU of that kind or less
    monkeypatch.setattr(runtime, "missing_packages", lambda: [])
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert runtime.resolve_runtime("auto") == runtime.ORT_INT8


@pytest.mark.parametrize(
    ("kind", "int8"),
    [("other", True), ("AVX2", True), ("AVX512", True), ("AVX512-BF16", True),
     ("AMX-BF16", False)],
)  # fmt: skip
def test_auto_keeps_torch_bf16_only_on_amx(kind, int8):
    assert runtime.auto_prefers_int8(kind) is int8


def test_the_setting_refuses_an_unknown_runtime(monkeypatch):
    from clothing_assets.settings import SettingsError, setting

    monkeypatch.setenv("CLOTHING_SCORING_RUNTIME", "tensorrt")
    with pytest.raises(SettingsError, match="CLOTHING_SCORING_RUNTIME"):
        setting("CLOTHING_SCORING_RUNTIME")
    monkeypatch.setenv("CLOTHING_SCORING_RUNTIME", "ONNXRuntime-INT8")
    assert setting("CLOTHING_SCORING_RUNTIME") == runtime.ORT_INT8
