"""Saves that survive a full disk and a crash, and two training runs
in one cache folder, on a real small filesystem (a tmpfs mounted for the test) and real
processes."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from clothing_assets.ml.data import load_decode_cache, save_decode_cache
from clothing_assets.ml.train import TrainSettings, fit, save_atomic
from clothing_assets_tests.support import REPO_ROOT

SETTINGS = TrainSettings(
    architecture="resnet18", weights="none", image_size=32, n_epochs=1, batch_size=8,
    checkpoint_every=1, seed=3,
)  # fmt: skip
# small checkpoints (at epoch ends only) and one thread: two of these share the machine
PROCESS_SETTINGS = TrainSettings(
    architecture="mobilenet_v3_small", weights="none", image_size=32, n_epochs=2, batch_size=8,
    checkpoint_every=0, seed=3,
)  # fmt: skip
ROOT = REPO_ROOT


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 37, 37), generator=gen, dtype=torch.uint8)
    return images, torch.arange(2).repeat_interleave(8)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 1 MiB tmpfs: writes beyond it fail with ENOSPC from the kernel."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _leftovers(folder: Path, keep: set[str]) -> list[str]:
    return sorted(set(os.listdir(folder)) - keep)


def test_a_full_disk_fails_clearly_and_leaves_the_old_file_and_no_temp_file(small_disk):
    path = small_disk / "model_trained.pt"
    old = save_atomic({"w": torch.zeros(10)}, path)
    with pytest.raises(OSError, match="disk is full") as failed:
        save_atomic({"w": torch.zeros(1_000_000)}, path)  # 4 MB on a 1 MiB disk
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
    save_atomic({"w": torch.zeros(3)}, tmp_path / "m.pt")
    assert synced == ["file", "folder"]
    synced.clear()
    save_decode_cache(tmp_path / "c.pt", "k", torch.zeros(1, 3, 4, 4, dtype=torch.uint8))
    assert synced == ["file", "folder"]


# --- 8. two training runs in one cache folder ----------------------------------------------

_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from clothing_assets.ml.durable import checkpoint_file
    from clothing_assets.ml.train import fit
    from clothing_assets_tests.graph.test_durability import PROCESS_SETTINGS, _data
    folder, fp, hold = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    images, labels = _data()
    def slow(stats, eta):
        print("EPOCH", time.time(), flush=True)
        time.sleep(hold)
    result = fit(
        images, labels, images[:4], labels[:4], ["a", "b"], PROCESS_SETTINGS,
        checkpoint_path=checkpoint_file(folder, fp), fingerprint=fp, on_epoch=slow,
    )
    print("DONE", result.steps, flush=True)
    """
)


def _start(folder: Path, fingerprint: str, hold_s: float, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", _RUN, str(folder), fingerprint, str(hold_s)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _epoch_times(out: str) -> list[float]:
    return [float(line.split()[1]) for line in out.splitlines() if line.startswith("EPOCH")]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_training_processes_in_one_cache_folder_take_turns(tmp_path):
    from clothing_assets.ml.durable import checkpoint_file

    first = _start(tmp_path, "a" * 64, 8.0)
    assert first.stdout.readline().startswith("EPOCH")  # first holds the lock, mid-run
    # another job's checkpoint lying in the folder is never touched by either run
    other = checkpoint_file(tmp_path, "c" * 64)
    other.write_bytes(b"another job's checkpoint")
    second = _start(tmp_path, "b" * 64, 0.0)
    out_a, err_a = first.communicate(timeout=120)
    out_b, err_b = second.communicate(timeout=120)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    assert "DONE 4" in out_a and "DONE 4" in out_b
    # the second trained only after the first had finished: their epochs do not interleave
    assert min(_epoch_times(out_b)) > max(_epoch_times(out_a)) + 8.0
    assert other.read_bytes() == b"another job's checkpoint"


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_run_that_waits_too_long_for_the_lock_fails_naming_the_holder(tmp_path):
    first = _start(tmp_path, "a" * 64, 120.0)
    try:
        assert first.stdout.readline().startswith("EPOCH")
        second = _start(tmp_path, "b" * 64, 0.0, CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS="1")
        _, err = second.communicate(timeout=120)
    finally:
        first.kill()
        first.communicate()
    assert second.returncode != 0
    assert "another training run holds" in err and str(tmp_path / "training.lock") in err
    assert f"pid {first.pid}" in err and "CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS" in err


def test_each_training_job_has_its_own_checkpoint_file(tmp_path):
    from clothing_assets.ml.durable import checkpoint_file

    a, b = checkpoint_file(tmp_path, "a" * 64), checkpoint_file(tmp_path, "b" * 64)
    assert a != b and a.name == f"checkpoint-{'a' * 16}.pt"
