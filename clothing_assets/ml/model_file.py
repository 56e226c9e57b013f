"""The model file (`model_trained.pt`): one typed `ModelFile`, and the only code that writes
or reads one with torch.

On disk it is a dict of tensors and plain values, so `torch.load(weights_only=True)` reads it
without unpickling arbitrary objects; its bytes are the model's identity (the store names a
version by their hash and checks it on every read). Training checkpoints go through
`save_checkpoint` / `load_checkpoint` here too.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clothing_assets.ml.durable import write_bytes_atomic
from clothing_assets.ml.images import cache_size
from clothing_assets.ml.models import build_model, normalization
from clothing_assets.ml.presets import ClassificationPresetEval
from clothing_assets.ml.settings import TrainSettings

MODEL_FORMAT = "clothing-assets/1"
_REQUIRED = ("architecture", "classes", "image_size", "mean", "std", "state_dict")


@dataclass(frozen=True)
class ModelFile:
    """A trained classifier as stored: the network's name and weights, the classes its outputs
    stand for, and how its images are sized and normalised. A file without weights
    (`state_dict` empty) still describes how to feed the model: the int8 runtime's file
    carries these fields beside its own graph."""

    architecture: str
    classes: tuple[str, ...]
    image_size: int
    cache_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    eval_flip: bool = False
    val_accuracy: float | None = None
    state_dict: Mapping[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of_training(
        cls,
        state_dict: Mapping[str, torch.Tensor],
        classes: Sequence[str],
        settings: TrainSettings,
        *,
        val_accuracy: float | None = None,
    ) -> ModelFile:
        """The file of weights trained under `settings`."""
        mean, std = normalization(settings.architecture)
        return cls(
            architecture=settings.architecture, classes=tuple(classes),
            image_size=settings.image_size, cache_size=cache_size(settings.image_size),
            mean=tuple(mean), std=tuple(std), eval_flip=settings.eval_flip,
            val_accuracy=val_accuracy, state_dict=state_dict,
        )  # fmt: skip

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], *, weights: bool = True) -> ModelFile:
        """The file of a loaded dict; ValueError names a missing field. A file without
        `eval_flip` is scored in one view, one without `cache_size` from images stored at the
        usual 8/7 of the crop (`images.cache_size`)."""
        required = _REQUIRED if weights else _REQUIRED[:-1]
        missing = [name for name in required if name not in payload]
        if missing:
            raise ValueError(f"not a clothing-assets model file (no {', '.join(missing)})")
        image_size = int(payload["image_size"])
        return cls(
            architecture=str(payload["architecture"]),
            classes=tuple(str(c) for c in payload["classes"]),
            image_size=image_size,
            cache_size=int(payload.get("cache_size") or cache_size(image_size)),
            mean=tuple(float(v) for v in payload["mean"]),
            std=tuple(float(v) for v in payload["std"]),
            eval_flip=bool(payload.get("eval_flip", False)),
            val_accuracy=payload.get("val_accuracy"),
            state_dict=payload["state_dict"] if weights else {},
        )

    def description(self) -> dict[str, Any]:
        """Every field but the weights, as the file stores them (lists, not tuples)."""
        return {
            "val_accuracy": self.val_accuracy,
            "format": MODEL_FORMAT,
            "architecture": self.architecture,
            "classes": list(self.classes),
            "image_size": self.image_size,
            "cache_size": self.cache_size,
            "eval_flip": self.eval_flip,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to_bytes(self) -> bytes:
        """The file's bytes: tensors and plain values only (weights_only-loadable)."""
        return save_tensors({**self.description(), "state_dict": self.state_dict})

    def save(self, path: Path) -> bytes:
        """Write the file to `path` durably (`durable.write_bytes_atomic`); its bytes."""
        data = self.to_bytes()
        write_bytes_atomic(path, data)
        return data

    @classmethod
    def load(cls, data: bytes, *, map_location: str | torch.device = "cpu") -> ModelFile:
        """The model file in `data`, read with `torch.load(weights_only=True)`: never unpickles
        arbitrary objects. Bytes that are not such a file raise ValueError."""
        payload = load_tensors(data, map_location=map_location, what="clothing-assets model")
        if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
            raise ValueError("not a clothing-assets model file (format marker missing)")
        return cls.from_payload(payload)

    def build(self) -> nn.Module:
        """The network with the file's weights, in eval mode, on the CPU."""
        model = build_model(self.architecture, len(self.classes), image_size=self.image_size)
        model.load_state_dict(self.state_dict)
        return model.eval()

    def eval_preset(self) -> ClassificationPresetEval:
        """The evaluation transform the model was validated with: center crop to its size from
        images stored at `cache_size`, its normalisation."""
        return ClassificationPresetEval(crop_size=self.image_size, mean=self.mean, std=self.std)


def save_tensors(obj: Any) -> bytes:
    """`obj` (tensors and plain values) as torch.save writes it."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def load_tensors(
    data: bytes, *, map_location: str | torch.device = "cpu", what: str = "tensor"
) -> Any:
    """What `save_tensors` wrote, read with `weights_only=True`; ValueError when torch cannot
    load it (torn, foreign, or holding objects that would run code), naming `what` it is not
    and torch's reason."""
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torn, foreign and unsafe files all end here
        reason = (str(exc).splitlines() or [""])[0][:200]
        raise ValueError(
            f"not a {what} file (torch cannot load it: {type(exc).__name__}: {reason})"
        ) from exc


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> bytes:
    """Write a training checkpoint durably (fsynced temp file, rename; a full disk raises
    DiskFullError and leaves the old file); its bytes."""
    data = save_tensors(checkpoint)
    write_bytes_atomic(path, data)
    return data


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at `path` if it belongs to this exact config and data, else None."""
    if not path.is_file():
        return None
    try:
        ckpt = load_tensors(path.read_bytes(), what="checkpoint")
    except Exception:  # noqa: BLE001 - a torn or foreign file is simply not resumable
        return None
    return ckpt if isinstance(ckpt, dict) and ckpt.get("fingerprint") == fingerprint else None
