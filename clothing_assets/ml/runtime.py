"""Scoring runtimes: the torch model as trained, or the same model as a static int8 ONNX graph
run by ONNX Runtime (the `int8` extra), for CPUs without AMX.

The int8 model is made once per model version on the client (`int8_model_bytes`: export to
ONNX, calibrate activation ranges on training images, quantize weights per channel and
activations per tensor, QDQ format) and shipped to every worker once, like the torch model;
`load_int8_model` rebuilds it on a worker. Measured on a 2-core AVX2 AMD EPYC,
ResNet50 at 250 px, one thread: 2.9x the torch fp32 forward, test accuracy within 0.5 points
(BENCHMARKS.md, Inference runtimes); on an AVX512-BF16 EPYC, 2.06x torch's bf16 path on Dask. The
default EfficientNet-Lite0's test-stage accuracy under int8 was within -0.3 to +0.9 points of
fp32 on three trained models (`bench/runtime_accuracy.py`, BENCHMARKS.md, int8 accuracy).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.durable import write_bytes_atomic
from clothing_assets.ml.images import ImageDecodeError, prepare
from clothing_assets.ml.model_file import ModelFile, load_tensors, save_tensors

log = logging.getLogger(__name__)

TORCH, ORT_INT8 = "torch", "onnxruntime-int8"
RUNTIMES = ("auto", TORCH, ORT_INT8)
INT8_FORMAT = "clothing-assets-onnx-int8/1"
TORCH_FIRST_KINDS = frozenset({"AMX-BF16"})


class RuntimeUnavailable(RuntimeError):
    """The runtime asked for by name is not installed here; the message says how to get it."""


def missing_packages() -> list[str]:
    """The packages the int8 runtime needs that this environment lacks."""
    return [p for p in ("onnxruntime", "onnx") if importlib.util.find_spec(p) is None]


def auto_prefers_int8(kind: str) -> bool:
    """Whether `auto` scores with int8 on a CPU of this `cpu.cpu_kind()`: everywhere but
    AMX-BF16. On an AVX512-BF16 EPYC int8 scored at 2.06x torch's bf16 path (ResNet50 at
    250 px, BENCHMARKS.md, Inference runtimes), so bf16 is kept only where it was never measured
    against int8 and AMX's bf16 tiles may well win."""
    return kind not in TORCH_FIRST_KINDS


def resolve_runtime(name: str, *, gpu: bool = False) -> str:
    """The runtime to score with for the setting `name` (`auto`, `torch`, `onnxruntime-int8`).

    `auto` is int8 when ONNX Runtime is installed and `auto_prefers_int8` for this CPU's kind,
    else torch (with a log line saying why): the guess made without measuring. Scoring and
    the model server measure instead (`runtime_choice.choose_runtime`). A GPU always scores
    with torch. Asking for `onnxruntime-int8` by name where it is not installed raises
    RuntimeUnavailable.
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown scoring runtime {name!r}; one of {', '.join(RUNTIMES)}")
    if name == TORCH or gpu:
        return TORCH
    missing = missing_packages()
    if name == ORT_INT8:
        if missing:
            raise RuntimeUnavailable(
                f"scoring runtime {ORT_INT8} needs {', '.join(missing)}: install the `int8` "
                "extra (pip install 'clothing-assets[int8]') or set CLOTHING_SCORING_RUNTIME=torch"
            )
        return ORT_INT8
    kind = cpu_kind()
    if not auto_prefers_int8(kind):
        log.info("scoring with torch: bf16 autocast is kept on %s CPUs", kind)
        return TORCH
    if missing:
        log.info(
            "scoring with torch: %s not installed (the `int8` extra scores about 2-2.5x "
            "faster on this CPU)",
            ", ".join(missing),
        )
        return TORCH
    return ORT_INT8


def export_onnx(model: torch.nn.Module, side: int) -> bytes:
    """`model` as an ONNX graph taking a normalised N x 3 x side x side float batch.

    TorchScript-based exporter: 3x quicker than the dynamo one here and needs no onnxscript.
    """
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice, once per export
        torch.onnx.export(
            model.eval(), (torch.zeros(1, 3, side, side),), buffer, dynamo=False,
            input_names=["input"], output_names=["logits"], opset_version=17,
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
    return buffer.getvalue()


# The first convolution is quantized too only when the calibration images' probabilities stay
# within this factor of the fp32 stem's distance from fp32. On five trained Lite0 models an int8
# stem moved them 0.96-1.77x as far (1.4x or more on four); on ResNet50 the fp32 stem and its max
# pool cost 12 % of the int8 forward pass (BENCHMARKS.md, int8 accuracy; Inference runtimes).
STEM_TOLERANCE = 1.1


def kept_in_fp32(onnx_path: str, *, stem: bool = True) -> list[str]:
    """The nodes `quantize_int8` leaves in fp32: the classifier (Gemm or MatMul) and, with
    `stem`, the first convolution (it sees the raw pixels). Quantizing the classifier costs
    accuracy and saves no time."""
    import onnx

    nodes = onnx.load(onnx_path).graph.node
    convs = [n.name for n in nodes if n.op_type == "Conv"]
    return convs[:stem] + [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")]


def prepare_for_quantization(onnx_model: bytes, folder: Path) -> Path:
    """`onnx_model` written into `folder` and prepared for quantization (shape inference and
    fusions), once for every quantization made of it."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, prepared = folder / "fp32.onnx", folder / "prepared.onnx"
    fp32.write_bytes(onnx_model)
    quant_pre_process(str(fp32), str(prepared))
    return prepared


def quantize_qdq(
    prepared: Path, calibration: torch.Tensor, batch_size: int, *, stem: bool
) -> bytes:
    """Static int8 (QDQ) quantization of a `prepare_for_quantization` model: weights int8 per
    output channel, activations uint8 per tensor with min-max ranges from `calibration`;
    `kept_in_fp32(stem=stem)` stays fp32."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    batches = iter(calibration[i : i + batch_size].contiguous().numpy()
                   for i in range(0, len(calibration), batch_size))  # fmt: skip

    class Reader(CalibrationDataReader):
        def get_next(self) -> dict[str, Any] | None:
            batch = next(batches, None)
            return None if batch is None else {"input": batch}

    out = prepared.with_name(f"int8-{'fp32' if stem else 'int8'}-stem.onnx")
    quantize_static(
        str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        nodes_to_exclude=kept_in_fp32(str(prepared), stem=stem),
    )  # fmt: skip
    return out.read_bytes()


def logits(
    model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, batch_size: int = 16
) -> torch.Tensor:
    """`model`'s logits of `batch`, `batch_size` images at a time."""
    with torch.inference_mode():
        return torch.cat([model(batch[i : i + batch_size])
                          for i in range(0, len(batch), batch_size)])  # fmt: skip


def probability_distance(model: Callable[[torch.Tensor], torch.Tensor], reference: torch.Tensor,
                         batch: torch.Tensor) -> float:  # fmt: skip
    """The mean over `batch` of the largest change of a class probability between `model`'s
    logits and the `reference` logits."""
    change = logits(model, batch).float().softmax(1) - reference.float().softmax(1)
    return float(change.abs().amax(1).mean())


def stem_in_int8(fp32_stem_distance: float, int8_stem_distance: float) -> bool:
    """Whether the stem is quantized: its int8 model's probabilities are no more than
    `STEM_TOLERANCE` times as far from fp32's as those of the model with an fp32 stem."""
    return int8_stem_distance <= STEM_TOLERANCE * fp32_stem_distance


def quantize_int8(
    onnx_model: bytes, calibration: torch.Tensor, batch_size: int = 16
) -> tuple[bytes, dict[str, Any]]:
    """(static int8 model of `onnx_model`, how its stem was chosen): the classifier stays fp32,
    and the first convolution too unless quantizing it keeps the `calibration` batch's
    probabilities within `STEM_TOLERANCE` of the fp32 stem's distance from the fp32 model's."""
    reference = logits(OnnxClassifier(onnx_model), calibration, batch_size)
    with tempfile.TemporaryDirectory(prefix="clothing-int8-") as tmp:
        prepared = prepare_for_quantization(onnx_model, Path(tmp))
        kept = quantize_qdq(prepared, calibration, batch_size, stem=True)
        whole = quantize_qdq(prepared, calibration, batch_size, stem=False)
    kept_distance = probability_distance(OnnxClassifier(kept), reference, calibration)
    whole_distance = probability_distance(OnnxClassifier(whole), reference, calibration)
    int8_stem = stem_in_int8(kept_distance, whole_distance)
    return (whole if int8_stem else kept), {
        "stem": "int8" if int8_stem else "fp32",
        "distance_fp32_stem": kept_distance,
        "distance_int8_stem": whole_distance,
    }


def calibration_batch(blobs: Sequence[bytes], model_file: ModelFile) -> torch.Tensor:
    """Image files decoded and preprocessed exactly as `scoring.classify` feeds the model."""
    images = []
    for blob in blobs:
        try:
            images.append(prepare(blob, model_file.cache_size))
        except ImageDecodeError:
            continue  # a bad calibration file is skipped, as scoring records it
    if not images:
        raise ValueError("no decodable calibration image")
    return model_file.eval_preset()(torch.stack(images)).contiguous()


def int8_model_bytes(model_bytes: bytes, calibration_blobs: Sequence[bytes]) -> bytes:
    """The int8 ONNX Runtime model of the torch model file `model_bytes`, calibrated on the
    image files `calibration_blobs` (~100 training images); loadable with `torch.load(...,
    weights_only=True)` like the model file, and by `load_int8_model`. It carries the model
    file's description (`ModelFile.description`: classes, sizes, normalisation) and records
    the SHA-256 of `model_bytes` and of its ONNX graph, so a cached copy is used only for that
    model file and only whole (`int8_payload`), and which precision its stem got and why
    (`quantize_int8`: `stem`, `distance_fp32_stem`, `distance_int8_stem`)."""
    model_file = ModelFile.load(model_bytes)
    onnx_model = export_onnx(model_file.build(), model_file.image_size)
    int8, stem = quantize_int8(onnx_model, calibration_batch(calibration_blobs, model_file))
    out = model_file.description()
    out |= {
        **stem,
        "format": INT8_FORMAT,
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "onnx_sha256": hashlib.sha256(int8).hexdigest(),
        "onnx": torch.frombuffer(bytearray(int8), dtype=torch.uint8),
    }
    return save_tensors(out)


# ONNX Runtime moves a QuantizeLinear up through a max pool; after the fp32 stem that leaves
# ResNet's first max pool running on uint8 in NCHW, a slow generic kernel (15 % of the forward
# pass at 250 px). Pooling in fp32 and then quantizing gives the same values, since quantizing
# is monotonic: ResNet50 ran 24.8 against 28.7 ms an image, Lite0 (no pool) unchanged
# (BENCHMARKS.md, Inference runtimes).
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


class OnnxClassifier:
    """An ONNX Runtime session called like the torch model: float batch in, logits out."""

    def __init__(self, onnx_model: bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            onnx_model, options, providers=["CPUExecutionProvider"],
            disabled_optimizers=DISABLED_OPTIMIZERS,
        )  # fmt: skip

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"input": batch.float().contiguous().numpy()})
        return torch.from_numpy(logits)


def load_int8_model(data: bytes, threads: int = 1) -> tuple[OnnxClassifier, ModelFile]:
    """(model, the description of the model file it was made from) from `int8_model_bytes`'
    bytes, on this worker; RuntimeUnavailable when ONNX Runtime is not installed here,
    ValueError when `data` is not such a model."""
    payload = int8_payload(data)
    missing = missing_packages()
    if missing:
        raise RuntimeUnavailable(
            f"this worker cannot run the {ORT_INT8} model: {', '.join(missing)} not "
            "installed (install the `int8` extra on the workers, or score with "
            "CLOTHING_SCORING_RUNTIME=torch)"
        )
    onnx_model = payload.pop("onnx").numpy().tobytes()
    return OnnxClassifier(onnx_model, threads), ModelFile.from_payload(payload, weights=False)


def int8_payload(data: bytes, model_sha256: str | None = None) -> dict[str, Any]:
    """The payload of `int8_model_bytes`' bytes `data`, checked: the format, the ONNX graph
    against its recorded SHA-256 (a torn or altered file is refused), and, given
    `model_sha256`, that it was made from the model file of that SHA-256. ValueError says why
    not."""
    payload = load_tensors(data, what=f"readable {ORT_INT8} model")
    if not isinstance(payload, dict) or payload.get("format") != INT8_FORMAT:
        raise ValueError(f"not a {ORT_INT8} model file (make it with int8_model_bytes)")
    graph = payload.get("onnx")
    if not isinstance(graph, torch.Tensor) or graph.dtype != torch.uint8:
        raise ValueError(f"the {ORT_INT8} model file holds no ONNX graph")
    if hashlib.sha256(graph.numpy().tobytes()).hexdigest() != payload.get("onnx_sha256"):
        raise ValueError(f"the {ORT_INT8} model's ONNX graph does not match its SHA-256")
    made_from = payload.get("model_sha256")
    if model_sha256 is not None and made_from != model_sha256:
        raise ValueError(
            f"made from another model file (SHA-256 {made_from or 'not recorded'}, not "
            f"{model_sha256})"
        )
    return payload


def scoring_model_bytes(
    model_bytes: bytes,
    version: str,
    runtime: str,
    calibration: Callable[[], Sequence[bytes]],
    cache_dir: Path,
    *,
    on_warning: Callable[[str], None] | None = None,
) -> bytes:
    """What the workers load for `runtime`: the model file itself for torch; for int8 its
    `int8_model_bytes`, made once per model version and ONNX Runtime release and kept under
    `cache_dir/runtimes/` (`calibration` is only called, and its images read, on a miss).

    A cached file is used only when `int8_payload` accepts it for this very model file; any
    other (torn, planted, made from other weights) is rebuilt and replaced. The cache is
    written with `durable.write_bytes_atomic`; a write that fails (a full disk) leaves no file
    and scoring goes on. Both are reported to `on_warning` (default: this module's logger)."""
    if runtime == TORCH:
        return model_bytes
    warn = on_warning or log.warning
    path = int8_cache_file(cache_dir, version, runtime)
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    if path.exists():
        try:
            cached = path.read_bytes()
            int8_payload(cached, model_sha256)
            return cached
        except (OSError, ValueError) as exc:
            warn(f"int8 model cache {path} not used, rebuilding it: {exc}")
    data = int8_model_bytes(model_bytes, calibration())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, data)
    except OSError as exc:
        warn(f"int8 model not cached, scoring goes on: {exc}")
    return data


def int8_cache_file(cache_dir: Path, version: str, runtime: str) -> Path:
    """Where `scoring_model_bytes` keeps the `runtime` model of `version`: one file per model
    version and ONNX Runtime release (a new release may quantize differently)."""
    import onnxruntime

    return Path(cache_dir) / "runtimes" / f"{version}-{runtime}-ort{onnxruntime.__version__}.pt"


def workers_lacking_runtime(client: Any) -> list[str]:
    """Addresses of the Dask workers where the int8 runtime's packages are missing."""
    return sorted(a for a, missing in client.run(missing_packages).items() if missing)
