"""Image embeddings: the penultimate-layer features of the project's classifiers, L2-normalised,
so that the dot product of two embeddings is their cosine similarity.

The penultimate layer is the input of the network's last `nn.Linear` (its classification head):
EfficientNet-Lite0's pooled 1280 features, a ResNet's pooled features before `fc`, the features
before `classifier[-1]` of the torchvision families that have a classifier block. It is read with
a forward hook on that layer, so one forward pass gives the class probabilities and the
embedding together: scoring embeds the test images from the same decode and the same pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from torch import nn


def head_of(model: nn.Module) -> nn.Linear:
    """The model's classification head: its last `nn.Linear` (the layer `models._replace_head`
    replaces), whose input is the embedding."""
    last = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is None:
        raise ValueError(f"{type(model).__name__} has no linear head to take an embedding before")
    return last


def embedding_dimension(model: nn.Module) -> int:
    """The length of the model's embeddings (its head's input features)."""
    return int(head_of(model).in_features)


@contextmanager
def capture_embeddings(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within it, every forward pass of `model` appends the head's input (N x d, detached,
    float32 on the CPU) to the list it yields: the embeddings of a forward run for its
    probabilities, with no second pass."""
    captured: list[torch.Tensor] = []

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0].detach().flatten(1).float().cpu())

    handle = head_of(model).register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def normalised(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """`features` (N x d) as float32 rows of unit L2 norm (a zero row stays zero)."""
    array = np.asarray(features, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)


def embed_batch(model: nn.Module, batch: torch.Tensor) -> np.ndarray:
    """The L2-normalised penultimate-layer features (float32, N x d) of a batch already
    prepared for `model` (the model file's eval preset applied: cropped and normalised)."""
    with torch.inference_mode(), capture_embeddings(model) as captured:
        model(batch)
    return normalised(captured[0])


def embed_with(
    model: nn.Module, forward: Callable[[], torch.Tensor]
) -> tuple[torch.Tensor, np.ndarray]:
    """(`forward()`'s output, the embeddings of its first pass through `model`): the
    classifier's answer and the embedding from one pass. With test-time flipping the first
    pass is the unflipped view, so an embedding never depends on the model's `eval_flip`."""
    with capture_embeddings(model) as captured:
        output = forward()
    if not captured:
        raise RuntimeError("the forward pass did not run the model's head")
    return output, normalised(captured[0])


def content_sha256(data: bytes) -> str:
    """The SHA-256 of a file's bytes (hex): equal for exact copies whatever their names."""
    return hashlib.sha256(data).hexdigest()


def embedding_rows(results: Sequence[dict[str, Any]], stage: str) -> list[dict[str, Any]]:
    """The clothing_embeddings rows of scoring results made with `embed` (`scoring.score_batch`)
    of files of `stage` ('train' or 'test'): each result's EMBEDDING and perceptual hashes, or
    its ERROR when it has none. Results left for the next run (DEFERRED) and results without
    either are not rows."""
    now = datetime.now(UTC)
    rows = []
    for result in results:
        vector, error = result.get("EMBEDDING"), result.get("ERROR")
        if result.get("DEFERRED") or (vector is None and not error):
            continue
        rows.append(
            {
                "RELATIVE_PATH": result["RELATIVE_PATH"],
                "STAGE": stage,
                "MODEL_VERSION": result["MODEL_VERSION"],
                "SIZE": result["SIZE"],
                "LAST_MODIFIED": result["LAST_MODIFIED"],
                "ETAG": result.get("ETAG"),
                "CONTENT_SHA256": result.get("CONTENT_SHA256"),
                "EMBEDDING": vector,
                "PHASH": result.get("PHASH") if vector is not None else None,
                "PHASH_CENTER": result.get("PHASH_CENTER") if vector is not None else None,
                "ERROR": None if vector is not None else error,
                "EMBEDDED_AT": result.get("PRED_TIMESTAMP") or now,
            }
        )
    return rows
