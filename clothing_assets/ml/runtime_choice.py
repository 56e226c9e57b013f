"""`auto`'s scoring runtime, chosen by measurement: a short timed probe of torch and the int8
ONNX Runtime model on this CPU, for this model, on a few calibration images.

int8 is a candidate only when it agrees with torch within the tolerance its tests hold it to
(MIN_AGREEMENT of the labels, every agreeing probability within MAX_CONFIDENCE_GAP): a faster
runtime that answers otherwise is not the same model. The fastest admitted candidate wins.
A candidate that cannot be built or loaded is left out, and why is recorded.

The probe runs in the process that decides (clothing_predictions' step), with as many threads
as a Dask task scores with, and is keyed by that process's CPU kind: workers on
another kind of CPU score with the same choice. The choice is kept per model version, CPU
kind and ONNX Runtime release as a small JSON file
beside the int8 model cache (`runtimes/`), written atomically: later runs, and the model server,
read it instead of probing again. The model server serves the runtime recorded here, so that
its answers are the batch path's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from clothing_assets.ml.cpu import cpu_kind
from clothing_assets.ml.durable import write_bytes_atomic
from clothing_assets.ml.images import ImageDecodeError, prepare
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.runtime import ORT_INT8, TORCH, load_int8_model, missing_packages

log = logging.getLogger(__name__)

CHOICE_FORMAT = "clothing-assets-runtime-choice/1"
# the int8 runtime's tolerance against torch, as its tests hold it (test_scoring_runtime)
MIN_AGREEMENT = 0.9
MAX_CONFIDENCE_GAP = 0.05
PROBE_IMAGES = 32  # two batches of 16, the batch path's default batch size
PROBE_BATCHES = 3  # timed per runtime, after one untimed warm-up batch
PROBE_SECONDS = 10.0  # a runtime stops being timed once its batches took this long

Classifier = Callable[[torch.Tensor], torch.Tensor]
Measure = Callable[[str, Callable[[], Any]], float]


@dataclass(frozen=True)
class RuntimeChoice:
    """What `auto` scores with for one model version on one CPU kind, and why."""

    runtime: str
    cpu_kind: str
    model_sha256: str
    seconds_per_image: dict[str, float] = field(default_factory=dict)
    agreement: float | None = None
    confidence_gap: float | None = None
    left_out: dict[str, str] = field(default_factory=dict)  # runtime: why it was not a candidate

    def describe(self) -> str:
        """One line for the logs: the runtime, the timings, what was left out."""
        timed = ", ".join(f"{k} {v * 1000:.1f} ms/img" for k, v in self.seconds_per_image.items())
        out = "; ".join(f"{k} left out: {v}" for k, v in self.left_out.items())
        return f"scoring runtime {self.runtime} on {self.cpu_kind}" + "".join(
            f" ({part})" for part in (timed, out) if part
        )

    def to_json(self) -> bytes:
        return json.dumps({"format": CHOICE_FORMAT, **asdict(self)}, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> RuntimeChoice:
        """The choice in `data`; ValueError when it is not one."""
        try:
            payload = json.loads(data)
            if payload.pop("format") != CHOICE_FORMAT:
                raise ValueError("another format")
            return cls(**payload)
        except (TypeError, KeyError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a runtime choice file: {exc}") from exc


def ort_release() -> str:
    """The installed ONNX Runtime release, or `none`."""
    try:
        return importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "none"


def choice_file(cache_dir: Path, version: str, kind: str) -> Path:
    """Where the choice for model `version` on CPU `kind` is kept: one per ONNX Runtime
    release too, since a new release may run int8 at another speed."""
    return Path(cache_dir) / "runtimes" / f"{version}-{kind}-ort{ort_release()}-choice.json"


def recorded_choice(
    cache_dir: Path, version: str, model_sha256: str, kind: str | None = None
) -> RuntimeChoice | None:
    """The choice kept for `version` on `kind` (default: this CPU's), when it was made for
    the model file of `model_sha256`; None when there is none (or it is unreadable)."""
    path = choice_file(cache_dir, version, kind or cpu_kind())
    try:
        choice = RuntimeChoice.from_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    return choice if choice.model_sha256 == model_sha256 else None


def timed(name: str, run: Callable[[], Any]) -> float:
    """Wall-clock seconds of `run()`: the probe's default `measure`."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def probe(
    candidates: dict[str, Classifier],
    model_file: ModelFile,
    images: Sequence[torch.Tensor],
    *,
    measure: Measure = timed,
    batch_size: int = 16,
    batches: int = PROBE_BATCHES,
    budget_s: float = PROBE_SECONDS,
) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """(seconds per image, probabilities of `images`) of each candidate, classified as the
    batch path does (`scoring.classify`, bf16 autocast for torch where it is native): one
    untimed pass over all `images` (its answers are the ones compared), then up to `batches`
    batches timed by `measure(name, run)`, fewer once they took `budget_s` in all."""
    from clothing_assets.ml.devices import amp_dtype_for
    from clothing_assets.ml.scoring import classify

    cpu = torch.device("cpu")
    chunks = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    speeds, answers = {}, {}
    for name, model in candidates.items():
        amp = amp_dtype_for(cpu) if name == TORCH else None

        def run(chunk: Sequence[torch.Tensor], model=model, amp=amp) -> torch.Tensor:
            return classify(model, model_file, chunk, cpu, amp)

        answers[name] = torch.cat([run(chunk) for chunk in chunks])
        spent, seen = 0.0, 0
        for i in range(batches):
            chunk = chunks[i % len(chunks)]
            spent += measure(name, lambda chunk=chunk: run(chunk))
            seen += len(chunk)
            if spent >= budget_s:
                break
        speeds[name] = spent / seen
    return speeds, answers


def agreement(reference: torch.Tensor, other: torch.Tensor) -> tuple[float, float]:
    """(share of images whose top label is the same, the largest difference in that label's
    probability over those images; 1.0 when none agree)."""
    confidence, label = reference.max(dim=1)
    same = label == other.argmax(dim=1)
    if not bool(same.any()):
        return 0.0, 1.0
    theirs = other.gather(1, label[:, None])[:, 0]
    return float(same.float().mean()), float((confidence - theirs).abs()[same].max())


def probe_images(blobs: Sequence[bytes], model_file: ModelFile) -> list[torch.Tensor]:
    """Up to PROBE_IMAGES of `blobs`, decoded as the batch path decodes them."""
    images = []
    for blob in blobs:
        try:
            images.append(prepare(blob, model_file.cache_size))
        except ImageDecodeError:
            continue
        if len(images) == PROBE_IMAGES:
            break
    return images


def choose_runtime(
    model_bytes: bytes,
    version: str,
    int8_bytes: Callable[[], bytes],
    calibration: Callable[[], Sequence[bytes]],
    cache_dir: Path,
    *,
    kind: str | None = None,
    measure: Measure = timed,
    threads: int = 1,
    on_warning: Callable[[str], None] | None = None,
) -> RuntimeChoice:
    """`auto`'s runtime for the model file `model_bytes` of `version` on CPU `kind` (default:
    this one's): the choice kept for them, else a probe (`probe`) of torch and, when it builds
    and loads (`int8_bytes()`), the int8 model, on `calibration()` images, with `threads`
    threads each; the fastest admitted candidate, kept for the next time. A choice that
    cannot be kept (a full disk) is reported to `on_warning` and returned all the same."""
    kind = kind or cpu_kind()
    model_sha256 = hashlib.sha256(model_bytes).hexdigest()
    kept = recorded_choice(cache_dir, version, model_sha256, kind)
    if kept is not None:
        return kept
    model_file = ModelFile.load(model_bytes)
    # channels-last, as the batch path's workers hold the model
    candidates: dict[str, Classifier] = {
        TORCH: model_file.build().to(memory_format=torch.channels_last)
    }
    left_out = _add_int8(candidates, int8_bytes, threads)
    images = probe_images(calibration(), model_file) if len(candidates) > 1 else []
    if len(candidates) > 1 and not images:
        left_out[ORT_INT8] = "no decodable image to probe it with"
        del candidates[ORT_INT8]
    speeds, rates = {}, {}
    if len(candidates) > 1:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            speeds, answers = probe(candidates, model_file, images, measure=measure)
        finally:
            torch.set_num_threads(before)
        rates = dict(zip(("agreement", "confidence_gap"),
                         agreement(answers[TORCH], answers[ORT_INT8]), strict=True))  # fmt: skip
        if rates["agreement"] < MIN_AGREEMENT or rates["confidence_gap"] > MAX_CONFIDENCE_GAP:
            left_out[ORT_INT8] = (
                f"outside int8's tolerance: {rates['agreement']:.0%} of the labels agree with "
                f"torch (at least {MIN_AGREEMENT:.0%} needed), probabilities differ by up to "
                f"{rates['confidence_gap']:.3f} (at most {MAX_CONFIDENCE_GAP})"
            )
    admitted = {k: v for k, v in speeds.items() if k not in left_out} or {TORCH: 0.0}
    choice = RuntimeChoice(
        runtime=min(admitted, key=admitted.__getitem__), cpu_kind=kind,
        model_sha256=model_sha256, seconds_per_image=speeds, left_out=left_out, **rates,
    )  # fmt: skip
    _keep(choice, choice_file(cache_dir, version, kind), on_warning or log.warning)
    return choice


def _add_int8(candidates: dict[str, Classifier], int8_bytes: Callable[[], bytes], threads: int):
    """Add the int8 model to `candidates` when it is installed, builds and loads; the
    reasons it was left out otherwise ({runtime: why})."""
    missing = missing_packages()
    if missing:
        return {ORT_INT8: f"{', '.join(missing)} not installed (the `int8` extra)"}
    try:
        candidates[ORT_INT8] = load_int8_model(int8_bytes(), threads)[0]
    except Exception as exc:  # noqa: BLE001 - whatever stops int8 leaves torch to score
        reason = (str(exc).splitlines() or [""])[0][:300]
        return {ORT_INT8: f"could not be built or loaded: {type(exc).__name__}: {reason}"}
    return {}


def _keep(choice: RuntimeChoice, path: Path, warn: Callable[[str], None]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, choice.to_json())
    except OSError as exc:
        warn(f"runtime choice not kept, it will be measured again next time: {exc}")


def batch_choice(cache_dir: Path, version: str, model_sha256: str) -> RuntimeChoice | None:
    """The choice the batch path made for `version`: the one for this CPU's kind, else the
    newest made on another kind (the server then still answers as the batch path does)."""
    own = recorded_choice(cache_dir, version, model_sha256)
    if own is not None:
        return own
    pattern = f"{version}-*-ort{ort_release()}-choice.json"
    paths = sorted(Path(cache_dir, "runtimes").glob(pattern), key=_mtime, reverse=True)
    for path in paths:
        try:
            choice = RuntimeChoice.from_json(path.read_bytes())
        except (OSError, ValueError):
            continue
        if choice.model_sha256 == model_sha256:
            return choice
    return None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def serving_runtime(
    asked: str, version: str, model_sha256: str, cache_dir: Path, *, gpu: bool = False
) -> tuple[str, str]:
    """(runtime, why) the model server serves `version` (its file's SHA-256 `model_sha256`)
    with: the batch path's runtime for
    CLOTHING_SCORING_RUNTIME=`asked` (for `auto`, the choice it recorded), so that the two
    give the same answers. Torch, with the reason, until the batch path has chosen."""
    if gpu:
        return TORCH, "a GPU serves with torch"
    if asked == TORCH:
        return TORCH, "CLOTHING_SCORING_RUNTIME=torch"
    if asked == ORT_INT8:
        return ORT_INT8, f"CLOTHING_SCORING_RUNTIME={ORT_INT8}"
    choice = batch_choice(cache_dir, version, model_sha256)
    if choice is None:
        return TORCH, (
            "CLOTHING_SCORING_RUNTIME=auto and clothing_predictions has not chosen a runtime "
            "for this version yet: torch until it does"
        )
    return choice.runtime, f"CLOTHING_SCORING_RUNTIME=auto: {choice.describe()}"
