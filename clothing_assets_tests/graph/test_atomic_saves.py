"""Saves that survive a full disk and a crash, on a real small filesystem (a tmpfs mounted for
the test): a model file, the decode cache and a checkpoint are written whole or not at all,
and each is fsynced with its folder."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
import torch

from clothing_assets.ml.data import load_decode_cache, save_decode_cache
from clothing_assets.ml.model_file import save_checkpoint
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.ml.train import fit
from clothing_assets_tests.support.disks import small_tmpfs

SETTINGS = TrainSettings(
    architecture="resnet18", weights="none", image_size=32, n_epochs=1, batch_size=8,
    checkpoint_every=1, seed=3,
)  # fmt: skip


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 37, 37), generator=gen, dtype=torch.uint8)
    return images, torch.arange(2).repeat_interleave(8)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1 MiB tmpfs: writes beyond it fail with ENOSPC from the kernel."""
    with small_tmpfs(tmp_path / "small") as mount:
        yield mount


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(set(os.listdir(folder)) - keep)


def test_a_full_disk_fails_clearly_and_leaves_the_old_file_and_no_temp_file(small_disk):
    path = small_disk / "model_trained.pt"
    old = save_checkpoint({"w": torch.zeros(10)}, path)
    with pytest.raises(OSError, match="disk is full") as failed:
        save_checkpoint({"w": torch.zeros(1_000_000)}, path)  # 4 MB on a 1 MiB disk
    assert str(path) in str(failed.value)
    assert path.read_bytes() == old
    assert _leftovers(small_disk, {path.name}) == []


def test_a_full_disk_does_not_lose_the_decode_cache_or_stop_training(small_disk, caplog):
    path = small_disk / "cache" / "decoded_train.pt"
    small = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    save_decode_cache(path, "old", small)
    with caplog.at_level(logging.WARNING):
        save_decode_cache(path, "new", torch.zeros(40, 3, 146, 146, dtype=torch.uint8))
    assert "decode cache not written" in caplog.text and "disk is full" in caplog.text
    assert torch.equal(load_decode_cache(path, "old", 4), small)
    assert _leftovers(path.parent, {path.name}) == []


@pytest.mark.timeout(120)
def test_a_checkpoint_the_full_disk_refuses_is_a_warning_not_a_failed_run(small_disk, caplog):
    images, labels = _data()
    ckpt = small_disk / "checkpoint.pt"  # a resnet18 checkpoint is ~130 MB: never fits
    with caplog.at_level(logging.WARNING):
        result = fit(
            images, labels, images[:4], labels[:4], ["a", "b"], SETTINGS,
            checkpoint_path=ckpt, fingerprint="f",
        )  # fmt: skip
    assert result.steps == 2 and len(result.history) == 1
    assert "checkpoint at step 1 not written, training goes on" in caplog.text
    assert "disk is full" in caplog.text
    assert not ckpt.exists()
    assert [n for n in os.listdir(small_disk) if n.endswith(".tmp")] == []


def test_an_atomic_save_fsyncs_the_file_and_then_its_folder(tmp_path, monkeypatch):
    """The real os.fsync runs; the spy only records what kind of descriptor it was given."""
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    save_checkpoint({"w": torch.zeros(3)}, tmp_path / "m.pt")
    assert synced == ["file", "folder"]
    synced.clear()
    save_decode_cache(tmp_path / "c.pt", "k", torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    assert synced == ["file", "folder"]
