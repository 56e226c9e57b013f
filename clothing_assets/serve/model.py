"""A loaded model version and the per-image step before it: the batch path's own code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clothing_assets.ml.scoring import classify, prepare
from clothing_assets.ml.train import amp_dtype_for, load_model, select_device


@dataclass(frozen=True)
class LoadedModel:
    """One model version, ready to classify; immutable, so a request can keep using the one
    it started with while the server switches to a newer one."""

    version: str
    model: nn.Module
    payload: dict[str, Any]
    device: torch.device
    amp_dtype: torch.dtype | None

    @classmethod
    def from_bytes(cls, version: str, data: bytes, device: str = "auto") -> LoadedModel:
        """Rebuild the model from `model_trained.pt` bytes (never unpickling arbitrary objects)
        on `device` (`auto`: CUDA when there is a GPU)."""
        target = select_device(device)
        model, payload = load_model(data, map_location="cpu")
        model = model.to(target, memory_format=torch.channels_last)
        return cls(version, model, payload, target, amp_dtype_for(target))

    @property
    def classes(self) -> list[str]:
        return list(self.payload["classes"])

    def info(self) -> dict[str, Any]:
        """What GET /model answers."""
        return {
            "model_version": self.version,
            "architecture": self.payload["architecture"],
            "image_size": self.payload["image_size"],
            "classes": self.classes,
            "val_accuracy": self.payload.get("val_accuracy"),
            "device": self.device.type,
        }

    def decode(self, data: bytes) -> torch.Tensor:
        """Decode one file and resize it as the batch scorer does; raises ImageDecodeError."""
        return prepare(data, self.payload)

    def probabilities(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Softmax probabilities of decoded images, in one forward pass."""
        return classify(self.model, self.payload, images, self.device, self.amp_dtype)

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
