"""Two training runs in one cache folder, as real processes: they take turns under the folder's
lock, one that waits too long fails naming the holder, and each job has its own checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from clothing_assets.ml.settings import TrainSettings
from clothing_assets_tests.support import REPO_ROOT

PROCESS_SETTINGS = TrainSettings(
    architecture="mobilenet_v3_small", weights="none", image_size=32, n_epochs=2, batch_size=8,
    checkpoint_every=0, seed=3,
)  # fmt: skip


ROOT = REPO_ROOT


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 37, 37), generator=gen, dtype=torch.uint8)
    return images, torch.arange(2).repeat_interleave(8)


_RUN = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from clothing_assets.ml.durable import checkpoint_file
    from clothing_assets.ml.train import fit
    from clothing_assets.settings import setting
    from clothing_assets_tests.graph.test_training_lock import PROCESS_SETTINGS, _data
    folder, fp, hold = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    images, labels = _data()
    def slow(stats, eta):
        print("EPOCH", time.time(), flush=True)
        time.sleep(hold)
    result = fit(
        images, labels, images[:4], labels[:4], ["a", "b"], PROCESS_SETTINGS,
        checkpoint_path=checkpoint_file(folder, fp), fingerprint=fp, on_epoch=slow,
        lock_timeout_s=setting("CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS"),
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


def test_the_lock_waits_no_longer_than_its_timeout(tmp_path):
    from clothing_assets.ml.durable import TrainingLockTimeout, training_lock

    with training_lock(tmp_path, timeout_s=None):  # another open file: flock refuses it too
        started = time.monotonic()
        with (
            pytest.raises(TrainingLockTimeout, match="another training run holds"),
            training_lock(tmp_path, timeout_s=0.5),
        ):
            pass
        assert 0.5 <= time.monotonic() - started < 5
    with training_lock(tmp_path, timeout_s=0.5):  # released: taken at once
        pass


@pytest.mark.timeout(240)
def test_the_training_step_waits_for_the_lock_as_long_as_its_variable_says(local_env, monkeypatch):
    from clothing_assets.ml.durable import training_lock
    from clothing_assets_tests.support import materialize, step_failure

    monkeypatch.setenv("CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS", "1")
    with training_lock(local_env.cache, timeout_s=None):  # another run is training
        result = materialize(["clothing_dataset_train", "clothing_train", "trained_model"])
    error = step_failure(result)
    text = error.message + (error.cause.message if error.cause else "")
    assert "another training run holds" in text and "waited 1s" in text
    assert "CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS" in text
