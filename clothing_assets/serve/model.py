"""A loaded model version and the per-image step before it: the batch path's own code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clothing_assets.ml.devices import amp_dtype_for, select_device
from clothing_assets.ml.images import prepare
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.runtime import ORT_INT8, TORCH, load_int8_model
from clothing_assets.ml.scoring import classify


@dataclass(frozen=True)
class LoadedModel:
    """One model version, ready to classify; immutable, so a request can keep using the one
    it started with while the server switches to a newer one."""

    version: str
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor]
    model_file: ModelFile
    device: torch.device
    amp_dtype: torch.dtype | None
    runtime: str = TORCH
    runtime_note: str = ""  # why this runtime serves

    @classmethod
    def from_bytes(
        cls, version: str, data: bytes, device: str = "auto", *, int8: bytes | None = None,
        note: str = "", threads: int | None = None,
    ) -> LoadedModel:  # fmt: skip
        """Rebuild the model from `model_trained.pt` bytes (never unpickling arbitrary objects)
        on `device` (`auto`: CUDA when there is a GPU); with `int8`, the batch path's int8
        model of those bytes (`runtime.int8_model_bytes`), run by ONNX Runtime on the CPU
        with `threads` (default: this thread's torch thread count). `note` says why this
        runtime serves."""
        model_file = ModelFile.load(data, map_location="cpu")
        if int8 is not None:
            session, _ = load_int8_model(int8, threads or torch.get_num_threads())
            return cls(version, session, model_file, torch.device("cpu"), None, ORT_INT8, note)
        target = select_device(device)
        model = model_file.build().to(target, memory_format=torch.channels_last)
        return cls(version, model, model_file, target, amp_dtype_for(target), TORCH, note)

    @property
    def classes(self) -> list[str]:
        return list(self.model_file.classes)

    def info(self) -> dict[str, Any]:
        """What GET /model answers."""
        return {
            "model_version": self.version,
            "architecture": self.model_file.architecture,
            "image_size": self.model_file.image_size,
            "classes": self.classes,
            "val_accuracy": self.model_file.val_accuracy,
            "device": self.device.type,
            "runtime": self.runtime,
            "runtime_note": self.runtime_note,
        }

    def decode(self, data: bytes) -> torch.Tensor:
        """Decode one file and resize it as the batch scorer does; raises ImageDecodeError."""
        return prepare(data, self.model_file.cache_size)

    def probabilities(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities of decoded images, in one forward pass."""
        return classify(self.model, self.model_file, images, self.device, self.amp_dtype)

    def answer(self, probabilities: torch.Tensor, top_k: int = 3) -> dict[str, Any]:
        """The JSON answer for one image's probabilities (a 1-D tensor)."""
        values, indices = probabilities.topk(min(top_k, probabilities.numel()))
        top = [
            {"label": self.classes[i], "probability": round(float(p), 6)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)
        ]
        return {
            "label": top[0]["label"],
            "confidence": top[0]["probability"],
            "top": top,
            "model_version": self.version,
        }
