"""Test-only: a real S3 endpoint (moto's server) on 127.0.0.1, reached the way users reach S3:
through the standard AWS variables and nothing else."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

# distinctive, so that a leak anywhere (logs, metadata, events) is found by a plain search
FAKE_ACCESS_KEY = "AKIACLOTHINGTESTKEY01"
FAKE_SECRET = "clothing-s3-secret-8f3a1c9e-do-not-leak"
BUCKET = "clothing-stages"


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Start moto's S3 server on a free port, point the AWS variables at it, create BUCKET."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # moto keeps its buckets per process, across servers: start every test from nothing
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=30).close()
    fsspec.filesystem("s3").clear_instance_cache()  # no client made before the variables
    s3().mkdir(BUCKET)
    try:
        yield endpoint
    finally:
        s3().clear_instance_cache()
        server.stop()


def s3():
    """The s3fs filesystem, configured by the environment only."""
    return fsspec.filesystem("s3")


def upload(folder: Path, prefix: str) -> str:
    """Copy every file under `folder` to `s3://BUCKET/prefix/`; returns that URL."""
    fs = s3()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fs.pipe(f"{BUCKET}/{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
    return f"s3://{BUCKET}/{prefix}"
