"""Scoring on Dask workers: batches of paths in, predictions out; pixels never cross the wire."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn

from clothing_assets.ml.devices import amp_dtype_for, autocast
from clothing_assets.ml.embeddings import capture_embeddings, content_sha256, normalised
from clothing_assets.ml.images import ImageDecodeError, decode_images
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.phash import image_hashes
from clothing_assets.ml.runtime import load_int8_model
from clothing_assets.stage import (
    FileTooLargeError,
    ReadLimits,
    UnsafePathError,
    URLRefusedError,
    read_file,
)

# Why a row's result is left unwritten (its DEFERRED), so that the next run reads it again:
# a read that failed for a reason of the moment (a folder briefly missing, an NFS blip, an
# object store's 5xx after its retries), or a file that is no longer the version its catalog
# row lists (a prediction of its bytes would be written against the old row).
DEFERRED_TRANSIENT = "transient"
DEFERRED_CHANGED = "changed"
_DEFERRED_MEANING = {
    DEFERRED_TRANSIENT: "could not be read for the moment (an OS or network error); the next "
    "run reads them again",
    DEFERRED_CHANGED: "changed since the catalog was synced; they are read once a sync catalogs "
    "their new version",
}


def deferred_notes(results: Sequence[dict[str, Any]]) -> list[str]:
    """One warning per kind of DEFERRED among `results`: how many files were left unwritten
    for the next run, why, and up to three of them with their error."""
    notes = []
    for kind, meaning in _DEFERRED_MEANING.items():
        rows = [r for r in results if r.get("DEFERRED") == kind]
        if rows:
            examples = "; ".join(f"{r['RELATIVE_PATH']}: {r['ERROR']}" for r in rows[:3])
            notes.append(f"{len(rows)} files {meaning} (e.g. {examples})")
    return notes


# One loaded model per version per worker process, kept across batches and runs.
_MODELS: dict[str, tuple[nn.Module, ModelFile, torch.dtype | None]] = {}
_LOCK = threading.Lock()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"pid-{os.getpid()}"


def tune_allocator() -> bool:
    """Give glibc back its usual malloc thresholds in this process; True if it applied.

    Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also freezes glibc's
    mmap threshold: every activation tensor is then mmapped and page-faulted afresh, and a bf16
    ResNet50 forward ran at 11.0 instead of 16.5 img/s per core on a 2-core CPU (BENCHMARKS.md,
    Inference runtimes). mallopt restores the
    behaviour whatever the cluster's settings. Not glibc (macOS, musl): nothing to do.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is glibc's own ceiling for the dynamic mmap threshold on 64-bit systems
    return bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
        libc.mallopt(m_trim_threshold, 256 * 2**20)
    )


class ModelNotLoaded(RuntimeError):
    """A task was sent without the model's bytes to a worker that does not hold the model
    (it restarted or joined after the client checked); the client resends with the bytes."""


def loaded_versions() -> list[str]:
    """The model versions this process holds (`version@runtime` when not run by torch); the
    client runs it on every worker to decide whether the model's bytes need to travel at all."""
    with _LOCK:
        return ["@".join(key.split("@")[::2]) for key in _MODELS]


def scoring_device(gpu: bool) -> torch.device:
    """CUDA when the task asked for a GPU and this worker has one, else the CPU."""
    return torch.device("cuda") if gpu and torch.cuda.is_available() else torch.device("cpu")


def cached_model(
    model_bytes: bytes | None,
    version: str,
    torch_threads: int,
    device: torch.device,
    runtime: str = "torch",
) -> tuple[nn.Module, ModelFile, torch.dtype | None]:
    """The model of `version` on `device`, loaded once per process whatever device it was
    saved from, and kept across batches and runs. Raises ModelNotLoaded when it is not here
    and `model_bytes` is None. With `runtime` "onnxruntime-int8", `model_bytes` are
    `runtime.int8_model_bytes` and the model is an ONNX Runtime session (CPU, no autocast)."""
    key = f"{version}@{device}" + ("" if runtime == "torch" else f"@{runtime}")
    with _LOCK:
        if key not in _MODELS:
            if model_bytes is None:
                raise ModelNotLoaded(f"model {version} is not loaded on {_worker_name()}")
            tune_allocator()
            torch.set_num_threads(max(1, torch_threads))
            if runtime != "torch":
                _MODELS.clear()
                _MODELS[key] = (*load_int8_model(model_bytes, torch_threads), None)
                return _MODELS[key]
            model_file = ModelFile.load(model_bytes, map_location="cpu")
            model = model_file.build().to(device, memory_format=torch.channels_last)
            _MODELS.clear()  # an older version is no longer needed
            _MODELS[key] = (model, model_file, amp_dtype_for(device))
        return _MODELS[key]


def warm_model(
    model_bytes: bytes,
    version: str,
    *,
    torch_threads: int = 1,
    gpu: bool = False,
    runtime: str = "torch",
) -> float:
    """Load `version` into this worker before any batch arrives; return the seconds it took."""
    started = time.perf_counter()
    cached_model(model_bytes, version, torch_threads, scoring_device(gpu), runtime)
    return time.perf_counter() - started


def _read(row: dict[str, Any], limits: ReadLimits | None = None) -> bytes | tuple[str | None, str]:
    """The row's file bytes, or (DEFERRED, reason) when they cannot be scored: DEFERRED None
    when the reason is final (the row keeps it as its ERROR), else why it is left for the next
    run. Refused paths and oversized files are final; a refused URL is final too, once the
    client's retry with a fresh URL is refused again; any other OS or network error is of
    the moment; a file that differs from its catalog row waits for the next sync."""
    try:
        data, opened = read_file(row["URL"], limits)
    except (UnsafePathError, FileTooLargeError) as exc:
        return None, str(exc)
    except URLRefusedError as exc:
        return None, f"unreadable file: {exc}"
    except OSError as exc:
        return DEFERRED_TRANSIENT, f"unreadable file: {exc}"
    changed = opened.differs_from(row["SIZE"], row.get("LAST_MODIFIED"), row.get("ETAG"))
    if changed:
        return DEFERRED_CHANGED, f"changed since the catalog was synced ({changed})"
    return data


def classify(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    model_file: ModelFile,
    images: Sequence[torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Softmax probabilities (N x classes, float32, on the CPU) of `images.prepare`d images, in
    one forward pass: the model file's eval preset (center crop, normalise) and autocast as in
    training. With the model's `eval_flip` (the default: +1 to +1.7 points on held-out images,
    BENCHMARKS.md, Test-time augmentation), the mean of the image's and its mirror image's
    probabilities, in a second pass.

    The batch scorer and the model server both classify through here, so that the same model
    and image give the same answer on either path.
    """
    return classify_and_embed(model, model_file, images, device, amp_dtype)[0]


def classify_and_embed(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    model_file: ModelFile,
    images: Sequence[torch.Tensor],
    device: torch.device,
    amp_dtype: torch.dtype | None,
    *,
    embed: bool = False,
    mirrored: bool = True,
) -> tuple[torch.Tensor, list[np.ndarray] | None]:
    """`classify`'s probabilities and, with `embed`, each image's embedding (`ml.embeddings`:
    the head's input, L2-normalised, float32) of the unflipped view, read from the same forward
    pass. `embed` needs a torch module (ValueError otherwise). Without `mirrored` the mirrored
    view's pass is left out, whatever the model file says: the embeddings are the same, the
    probabilities the unflipped view's alone (for callers that keep only the embeddings)."""
    batch = torch.stack([image.to(device) for image in images])
    views = [model_file.eval_preset()(batch)]
    if model_file.eval_flip and mirrored:
        views.append(views[0].flip(3))
    if embed and not isinstance(model, nn.Module):
        raise ValueError("embedding needs a torch model; the int8 runtime answers logits alone")
    embeddings = None
    with torch.inference_mode(), autocast(device, amp_dtype):
        if embed:
            with capture_embeddings(model) as captured:
                probs = [torch.softmax(model(view).float(), dim=1) for view in views]
            embeddings = list(normalised(captured[0]))
        else:
            probs = [torch.softmax(model(view).float(), dim=1) for view in views]
    return (sum(probs) / len(probs)).cpu(), embeddings


def score_batch(
    model_bytes: bytes | None,
    version: str,
    rows: Sequence[dict[str, Any]],
    *,
    torch_threads: int = 1,
    gpu: bool = False,
    limits: ReadLimits | None = None,
    runtime: str = "torch",
    embed: bool = False,
    classify: bool = True,
) -> list[dict[str, Any]]:
    """Read, decode and classify `rows` (each with URL, RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG;
    a None URL is a path the stage refused, recorded and never read).

    Files are read in parallel threads, decoded together (on the GPU when `gpu` and this worker
    has one) and classified in one forward pass. Returns one dict per row with TYPE,
    CONFIDENCE (the row's own softmax probability of its predicted class), PRED_TIMESTAMP,
    MODEL_VERSION, ERROR (one line, for unusable files), WORKER, DEVICE and DEFERRED (why the
    result is not to be written but left for the next run, with the reason in its ERROR; None
    for a result to write). A bad file never fails the batch. `model_bytes` may be None when
    the worker already holds `version`; with `runtime` "onnxruntime-int8" they are
    `runtime.int8_model_bytes` (CPU only).

    With `embed`, each result also has CONTENT_SHA256 (of the bytes read), EMBEDDING (the
    image's float32 embedding from the same decode and forward pass; None when ERROR) and
    PHASH and PHASH_CENTER (`ml.phash.image_hashes` of the same decoded image). Only
    the torch runtime embeds: the int8 ONNX graph answers logits alone. With `embed` and not
    `classify`, TYPE and CONFIDENCE stay None and the mirrored view's forward pass is left out
    (about half the forward time of a model scored with its mirror image).
    """
    if embed and runtime != "torch":
        raise ValueError(f"embedding needs the torch runtime; {runtime} answers logits alone")
    if not (embed or classify):
        raise ValueError("score_batch with neither classify nor embed would answer nothing")
    device = scoring_device(gpu)
    model, model_file, amp_dtype = cached_model(
        model_bytes, version, torch_threads, device, runtime
    )
    out = _blank_results(rows, version, _worker_name(), device.type)
    images, good = _read_and_decode(rows, out, limits, device, model_file.cache_size, embed)
    if images:
        probs, embeddings = classify_and_embed(
            model, model_file, images, device, amp_dtype, embed=embed, mirrored=classify
        )
        if classify:
            _label(good, probs, model_file.classes)
        for result, vector in zip(good, embeddings or [], strict=False):
            result["EMBEDDING"] = vector
        if embed:
            whole, centre = image_hashes(torch.stack(images))  # every image is side x side
            for result, a, b in zip(good, whole.tolist(), centre.tolist(), strict=True):
                result["PHASH"], result["PHASH_CENTER"] = a, b
    now = datetime.now(UTC)
    for result in out:
        result["PRED_TIMESTAMP"] = now
    return out


def _label(results: list[dict[str, Any]], probs: torch.Tensor, classes: Sequence[str]) -> None:
    """Set each result's TYPE and CONFIDENCE from its row of probabilities."""
    confidence, index = probs.max(dim=1)
    for result, conf, idx in zip(results, confidence.tolist(), index.tolist(), strict=True):
        result["TYPE"] = classes[idx]
        result["CONFIDENCE"] = float(conf)


def _blank_results(
    rows: Sequence[dict[str, Any]], version: str, worker: str, device: str
) -> list[dict[str, Any]]:
    """One result per row, not yet classified: no TYPE, CONFIDENCE or ERROR."""
    return [blank_result(row, version, worker, device) for row in rows]


def blank_result(
    row: dict[str, Any], version: str, worker: str, device: str | None
) -> dict[str, Any]:
    """The result of `row` before it is classified: the row's file as it was listed
    (RELATIVE_PATH, SIZE, LAST_MODIFIED, ETAG, which the write-back matches against the
    catalog to refuse a since-changed file), `version`, and no TYPE, CONFIDENCE or ERROR.
    Every result of a row, scored or not, starts here, so each carries every column written.
    DEFERRED (not written) is set when the result must not be written: see `_read`."""
    return {
        "RELATIVE_PATH": row["RELATIVE_PATH"],
        "SIZE": row["SIZE"],
        "LAST_MODIFIED": row["LAST_MODIFIED"],
        "ETAG": row.get("ETAG"),
        "TYPE": None,
        "CONFIDENCE": None,
        "MODEL_VERSION": version,
        "ERROR": None,
        "WORKER": worker,
        "DEVICE": device,
        "DEFERRED": None,
    }


def _read_and_decode(
    rows: Sequence[dict[str, Any]],
    out: list[dict[str, Any]],
    limits: ReadLimits | None,
    device: torch.device,
    side: int,
    embed: bool = False,
) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Read and decode `rows`' files in parallel, setting the ERROR in `out` of each unusable
    one (and, with `embed`, the CONTENT_SHA256 of each file read and an EMBEDDING of None);
    return the decoded images and, in the same order, the results they belong to."""
    blobs = list(_read_pool().map(lambda row: _read(row, limits), rows))
    readable = [i for i, b in enumerate(blobs) if isinstance(b, bytes)]
    for i, blob in enumerate(blobs):
        if embed:
            out[i]["EMBEDDING"] = out[i]["PHASH"] = out[i]["PHASH_CENTER"] = None
            out[i]["CONTENT_SHA256"] = content_sha256(blob) if isinstance(blob, bytes) else None
        if isinstance(blob, tuple):
            out[i]["DEFERRED"], out[i]["ERROR"] = blob
    images, good = [], []
    # each image is reduced as it is decoded: a batch of large files never sits in memory
    # at full size all at once
    decoded = decode_images([blobs[i] for i in readable], device=device, side=side)
    for i, image in zip(readable, decoded, strict=True):
        if isinstance(image, ImageDecodeError):
            out[i]["ERROR"] = str(image)
        else:
            images.append(image)
            good.append(out[i])
    return images, good


_POOL: list[ThreadPoolExecutor] = []


def _read_pool() -> ThreadPoolExecutor:
    """Threads for reading a batch's files at once (object stores answer in parallel)."""
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=8, thread_name_prefix="clothing-read"))
        return _POOL[0]
