"""A champion whose stored file fails its hash check: read and logged once, not at every
poll, and picked up as soon as the file changes."""

from __future__ import annotations

import os
import time

import pytest

from clothing_assets.resources.model_store import ModelStoreResource
from clothing_assets.serve.source import RegistryModelSource, RejectedModel
from clothing_assets_tests.support import register_model
from clothing_assets_tests.system.test_serve import Server, tiny_model

MISMATCH = "does not match its version"


def spoil(path) -> bytes:
    """Change the file's last bytes (same size); returns the good bytes."""
    good = path.read_bytes()
    path.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))
    return good


def restore(path, good: bytes) -> None:
    """Put the good bytes back in one rename, as the registry writes, so that a poll never
    reads a half-written file (which would be rejected, and logged, once more)."""
    staged = path.with_suffix(".restoring")
    staged.write_bytes(good)
    stamp = time.time_ns() + 2_000_000_000  # a stamp of its own, even on a coarse clock
    os.utime(staged, ns=(stamp, stamp))
    os.replace(staged, path)


def test_the_registry_source_reads_a_rejected_file_once_until_it_changes(local_env, monkeypatch):
    version = register_model(local_env, tiny_model(seed=1))
    stored = local_env.models / "versions" / f"{version}.pt"
    good = spoil(stored)
    reads: list[str] = []
    real_get = ModelStoreResource.get

    def counted_get(self, version: str, sha256: str | None = None) -> bytes:
        reads.append(version)
        return real_get(self, version, sha256)

    monkeypatch.setattr(ModelStoreResource, "get", counted_get)
    source = RegistryModelSource()
    for _ in range(5):
        with pytest.raises(RejectedModel, match=MISMATCH):
            source.current()
    assert reads == [version]
    restore(stored, good)
    assert source.current() == (version, good)
    assert reads == [version, version]


@pytest.mark.timeout(120)
def test_the_server_logs_a_rejected_champion_once_and_serves_it_once_repaired(local_env):
    version = register_model(local_env, tiny_model(seed=1))
    stored = local_env.models / "versions" / f"{version}.pt"
    good = spoil(stored)
    srv = Server(None, local_env.root / "server.log")  # polls every 0.2 s
    try:
        srv.wait_listening()
        # the first poll imports the warehouse's packages, which takes seconds on a busy machine
        deadline = time.monotonic() + 60
        while MISMATCH not in srv.log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)  # some fifteen more polls
        status, answer = srv.request("GET", "/health")
        assert status == 503 and MISMATCH in answer["detail"]
        assert srv.log.read_text().count(MISMATCH) == 1, srv.log.read_text()
        restore(stored, good)
        srv.wait_version(version)
    finally:
        srv.stop()
    assert srv.log.read_text().count(MISMATCH) == 1
