"""The model file (ml/model_file.py): written and read by one typed class, files in the dict
format trained models are stored in load, and anything else is refused with a clear error."""

from __future__ import annotations

import ast
import io
import os
from pathlib import Path

import pytest
import torch

from clothing_assets.ml.images import cache_size
from clothing_assets.ml.model_file import ModelFile, load_checkpoint, save_checkpoint
from clothing_assets.ml.models import build_model, normalization
from clothing_assets.ml.settings import TrainSettings

SETTINGS = TrainSettings(architecture="resnet18", weights="none", image_size=32, eval_flip=True)
CLASSES = ["hat", "pants", "shoes"]


def _stored_dict(state_dict, settings, val_accuracy):
    """A model file's dict, field by field, in the format trained models are stored in."""
    mean, std = normalization(settings.architecture)
    return {
        "val_accuracy": val_accuracy,
        "format": "clothing-assets/1",
        "architecture": settings.architecture,
        "classes": list(CLASSES),
        "image_size": settings.image_size,
        "cache_size": cache_size(settings.image_size),
        "eval_flip": settings.eval_flip,
        "mean": list(mean),
        "std": list(std),
        "state_dict": state_dict,
    }


def _saved(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_a_stored_dict_loads_and_rebuilds_the_same_network():
    torch.manual_seed(0)
    model = build_model("resnet18", len(CLASSES)).eval()
    data = _saved(_stored_dict(model.state_dict(), SETTINGS, 0.75))
    loaded = ModelFile.load(data)
    assert loaded.classes == tuple(CLASSES) and loaded.architecture == "resnet18"
    assert (loaded.image_size, loaded.cache_size) == (32, cache_size(32))
    assert loaded.eval_flip is True and loaded.val_accuracy == 0.75
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.build()(x), model(x))


def test_a_written_file_is_the_stored_dict_and_reads_back_equal():
    torch.manual_seed(0)
    state = build_model("resnet18", len(CLASSES)).state_dict()
    written = ModelFile.of_training(state, CLASSES, SETTINGS, val_accuracy=0.5)
    data = written.to_bytes()
    raw = torch.load(io.BytesIO(data), weights_only=True)
    expected = _stored_dict(state, SETTINGS, 0.5)
    assert list(raw) == list(expected)
    assert {k: v for k, v in raw.items() if k != "state_dict"} == {
        k: v for k, v in expected.items() if k != "state_dict"
    }
    assert data == _saved(expected)  # byte for byte: a model keeps its version
    assert ModelFile.load(data) == written  # every field but the weights


def test_a_file_without_eval_flip_or_cache_size_scores_one_view_at_the_usual_side():
    stored = _stored_dict(build_model("resnet18", 3).state_dict(), SETTINGS, None)
    del stored["eval_flip"], stored["cache_size"], stored["val_accuracy"]
    loaded = ModelFile.load(_saved(stored))
    assert loaded.eval_flip is False and loaded.val_accuracy is None
    assert loaded.cache_size == cache_size(32)


def test_the_eval_preset_crops_to_the_model_size_with_its_normalisation():
    lite = TrainSettings(architecture="efficientnet_lite0", image_size=32)
    preset = ModelFile.of_training({}, CLASSES, lite).eval_preset()
    mean, std = normalization("efficientnet_lite0")
    assert (preset.crop_size, preset.mean, preset.std) == (32, tuple(mean), tuple(std))
    batch = torch.full((1, 3, cache_size(32), cache_size(32)), 255, dtype=torch.uint8)
    out = preset(batch)
    assert out.shape == (1, 3, 32, 32)
    torch.testing.assert_close(out[0, :, 0, 0], (1 - torch.tensor(mean)) / torch.tensor(std))


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch /tmp/clothing-assets-model-file-pwned",))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "torch cannot load it"),
        (b"PK\x03\x04 not a zip", "torch cannot load it"),
        (_saved({"format": "clothing-assets/1", "evil": _Exploit()}), "UnpicklingError"),
        (_saved({"format": "other/1"}), "format marker missing"),
        (_saved({"format": "clothing-assets/1", "architecture": "resnet18"}), "no classes"),
    ],
    ids=["empty", "torn", "runs code", "foreign", "incomplete"],
)
def test_anything_else_is_refused_with_a_value_error_that_says_why(data, message):
    marker = "/tmp/clothing-assets-model-file-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    with pytest.raises(ValueError, match="not a clothing-assets model file") as caught:
        ModelFile.load(data)
    assert message in str(caught.value)
    assert not os.path.exists(marker)


def test_a_checkpoint_round_trips_and_one_of_another_run_is_not_resumed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    assert load_checkpoint(path, "f") is None  # none yet
    save_checkpoint({"fingerprint": "f", "step": torch.tensor(3)}, path)
    assert int(load_checkpoint(path, "f")["step"]) == 3
    assert load_checkpoint(path, "other") is None
    path.write_bytes(b"torn")
    assert load_checkpoint(path, "f") is None


# torch.save/torch.load outside ml/model_file.py, each for a file that is no model file: the
# decode cache of training images, and the packaged ImageNet weights (checked by SHA-256)
OTHER_TORCH_FILES = {"ml/data.py": 2, "ml/models.py": 1}


def test_only_the_model_file_module_saves_or_loads_with_torch():
    import clothing_assets

    root = Path(clothing_assets.__file__).parent
    calls: dict[str, int] = {}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "save")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                name = str(path.relative_to(root))
                calls[name] = calls.get(name, 0) + 1
    assert calls.pop("ml/model_file.py") == 2  # save_tensors and load_tensors
    assert calls == OTHER_TORCH_FILES
