"""A tiny untrained model file, for tests that need a champion but not a trained one."""

from __future__ import annotations

import io

import torch

from clothing_assets.ml.train import TrainSettings, build_model, model_payload

from . import CLASSES


def tiny_model_bytes(seed: int = 0) -> bytes:
    """A resnet18 for 32 px images of CLASSES, saved as `trained_model` saves one."""
    settings = TrainSettings(architecture="resnet18", image_size=32)
    torch.manual_seed(seed)
    payload = model_payload(
        build_model("resnet18", len(CLASSES)).state_dict(), list(CLASSES), settings,
        val_accuracy=0.9,
    )  # fmt: skip
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()
