"""Tiny model files for tests that score: a seeded, untrained resnet18 at 32 px."""

from __future__ import annotations

import torch

from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings

TINY_CLASSES = ["hat", "pants", "shoes"]


def tiny_model(seed: int = 0) -> tuple[bytes, str]:
    """(model file bytes, a version name) of an untrained resnet18 at 32 px over TINY_CLASSES:
    cheap to score, and the same bytes for the same seed."""
    settings = TrainSettings(architecture="resnet18", image_size=32)
    torch.manual_seed(seed)
    data = ModelFile.of_training(
        build_model("resnet18", len(TINY_CLASSES)).state_dict(), TINY_CLASSES, settings,
        val_accuracy=0.9,
    ).to_bytes()  # fmt: skip
    return data, f"tiny{seed:04d}tiny{seed:04d}"


def tiny_model_bytes(seed: int = 0) -> bytes:
    """The bytes of `tiny_model(seed)`: a resnet18 for 32 px images of TINY_CLASSES."""
    return tiny_model(seed)[0]
