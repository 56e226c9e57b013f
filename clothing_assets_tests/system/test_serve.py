"""The model server, as a real process on a free port, spoken to over real HTTP: same answers
as the batch scorer, clear 4xx for bad input, hot model switches, the page in a browser."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.scoring import score_batch
from clothing_assets.ml.settings import TrainSettings
from clothing_assets.resources.model_store import file_version
from clothing_assets.serve.batcher import Batcher
from clothing_assets.serve.cli import main
from clothing_assets.serve.model import LoadedModel
from clothing_assets_tests.support import COLOURS, REPO_ROOT, register_model, write_image
from clothing_assets_tests.support.processes import free_port

# a batched and a lone forward pass may differ in the last bits: under bf16 autocast (AVX512-BF16
# and AMX CPUs) oneDNN picks kernels by batch size, and bf16 keeps ~3 significant digits (2e-4
# seen on an AMX Xeon); a wrong image or a mixed-up row differs by far more
ATOL = 2e-3

REPO = REPO_ROOT
MAX_BYTES = 1_000_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def tiny_model(seed: int = 0) -> bytes:
    """An untrained resnet18 model file at 32 px for three classes (no training)."""
    torch.manual_seed(seed)
    return ModelFile.of_training(
        build_model("resnet18", 3).state_dict(), ["hat", "pants", "shoes"],
        TrainSettings(architecture="resnet18", image_size=32), val_accuracy=0.5,
    ).to_bytes()  # fmt: skip


def write_model_atomically(models: Path, data: bytes) -> str:
    """Replace models/model_trained.pt as the trained_model asset does; returns its version."""
    models.mkdir(parents=True, exist_ok=True)
    scratch = models / f".model-{uuid.uuid4().hex}.tmp"
    scratch.write_bytes(data)
    os.replace(scratch, models / "model_trained.pt")
    return file_version(data)


class Server:
    """`python -m clothing_assets.serve` on a free port, its log in a file."""

    def __init__(
        self, models: Path | None, log: Path, *extra: str, env: dict[str, str] | None = None
    ) -> None:
        """`models`: serve the file models/model_trained.pt; None: the registry's champion
        (of the warehouse and model store the environment names). `env`: more variables."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "CLOTHING_SERVE_POLL_SECONDS": "0.2",
            "CLOTHING_SERVE_MAX_BYTES": str(MAX_BYTES),
            **(env or {}),
        }
        if models is not None:
            env["CLOTHING_SERVE_MODEL_FILE"] = str(models / "model_trained.pt")
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "clothing_assets.serve", "--port", str(self.port), *extra],
            env=env,
            cwd=REPO,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not listen:\n{self.log.read_text()}")

    def wait_version(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.request("GET", "/health")
            if status == 200 and body["model_version"] == version:
                return
            time.sleep(0.1)
        raise AssertionError(f"server never served {version}:\n{self.log.read_text()}")

    def request(
        self, method: str, path: str, data: bytes | None = None, ctype: str | None = None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if ctype:
            request.add_header("Content-Type", ctype)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def predict(self, data: bytes, ctype: str = "image/jpeg") -> tuple[int, Any]:
        return self.request("POST", "/predict", data, ctype)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log_file.close()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def raw_exchange(port: int, head: bytes, body_parts: list[bytes]) -> bytes:
    """Send a hand-written request (possibly incomplete) and return what the server says."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(head)
        for part in body_parts:
            conn.sendall(part)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            more = conn.recv(65536)
            if not more:
                break
            reply += more
        return reply


def bomb_png() -> bytes:
    """A tiny PNG whose header claims 20000 x 20000 pixels (400 Mpx)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of fields
    ihdr[4:12] = struct.pack(">II", 20000, 20000)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(data)


def png_16bit(size: int = 24) -> bytes:
    pixels = np.linspace(0, 65535, size * size, dtype=np.uint16).reshape(size, size)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    assert Image.open(io.BytesIO(buffer.getvalue())).mode.startswith("I;16")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real JPEGs of every colour and size, a PNG, a 1x1, a 16-bit PNG and a truncated JPEG."""
    root = tmp_path_factory.mktemp("images")
    files = {
        f"{name}_{size}": write_image(root / f"{name}_{size}.jpg", colour, seed=size, size=size)
        for name, colour in COLOURS.items()
        for size in (40, 97, 300)
    }
    Image.open(files["hat_97"]).save(root / "hat.png")
    files["png"] = root / "hat.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(root / "one.jpg")
    files["one_pixel"] = root / "one.jpg"
    (root / "deep.png").write_bytes(png_16bit())
    files["16bit"] = root / "deep.png"
    whole = files["shoes_300"].read_bytes()
    (root / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    files["truncated"] = root / "cut.jpg"
    return files


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, bytes, str]]:
    """A server with a tiny model: (server, model bytes, version)."""
    root = tmp_path_factory.mktemp("served")
    data = tiny_model()
    version = write_model_atomically(root / "models", data)
    srv = Server(root / "models", root / "server.log")
    try:
        srv.wait_listening()
        srv.wait_version(version)
        yield srv, data, version
    finally:
        srv.stop()


def batch_answers(data: bytes, version: str, files: list[Path]) -> list[dict[str, Any]]:
    rows = [
        {"RELATIVE_PATH": f.name, "SIZE": 0, "LAST_MODIFIED": None, "URL": str(f.resolve())}
        for f in files
    ]
    return score_batch(data, version, rows)


@pytest.mark.timeout(120)
def test_the_server_gives_the_batch_scorers_answers(server, images):
    srv, data, version = server
    files = list(images.values())
    for file, expected in zip(files, batch_answers(data, version, files), strict=True):
        raw = file.read_bytes()
        status, answer = srv.predict(raw, "image/png" if file.suffix == ".png" else "image/jpeg")
        if expected["ERROR"] is not None:  # the batch path records it: the server refuses it
            assert status == 422 and answer["detail"] == expected["ERROR"], (file, answer)
            continue
        assert status == 200, (file, answer)
        assert answer["label"] == expected["TYPE"], file
        assert abs(answer["confidence"] - expected["CONFIDENCE"]) < 1e-3, file
        assert answer["model_version"] == version
        assert answer["top"][0] == {"label": answer["label"], "probability": answer["confidence"]}
        assert len(answer["top"]) == 3 and sum(t["probability"] for t in answer["top"]) <= 1.0001
        body, ctype = multipart("file", file.name, raw)
        assert srv.predict(body, ctype) == (status, answer), file


@pytest.mark.timeout(120)
def test_concurrent_requests_each_get_their_own_answer(server, images):
    from concurrent.futures import ThreadPoolExecutor

    srv, data, version = server
    files = [f for k, f in images.items() if k.split("_")[0] in COLOURS] * 2
    expected = batch_answers(data, version, files)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: srv.predict(f.read_bytes()), files))
    for (status, answer), want in zip(answers, expected, strict=True):
        assert status == 200 and answer["label"] == want["TYPE"]
        assert abs(answer["confidence"] - want["CONFIDENCE"]) < 1e-3


def test_health_and_model_describe_what_is_served(server):
    srv, _, version = server
    assert srv.request("GET", "/health") == (200, {"status": "ok", "model_version": version})
    status, info = srv.request("GET", "/model")
    assert status == 200
    assert info["model_version"] == version and info["architecture"] == "resnet18"
    assert info["image_size"] == 32 and info["classes"] == ["hat", "pants", "shoes"]
    assert info["val_accuracy"] == 0.5


BAD_INPUTS = {
    "text as image/jpeg": (b"hello, not a photo\n" * 10, "image/jpeg", 415, "not an image"),
    "text/plain": (b"hello", "text/plain", 415, "unsupported Content-Type text/plain"),
    "form-encoded": (b"a=1", "application/x-www-form-urlencoded", 415, "unsupported Content-Type"),
    "empty body": (b"", "image/png", 422, "empty file"),
    "decompression bomb": (bomb_png(), "image/png", 422, "decompression bomb refused"),
    "form without file": (b"--x\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nv\r\n"
                          b"--x--\r\n", "multipart/form-data; boundary=x", 422, "no file field"),
    "broken form": (b"garbage", "multipart/form-data", 422, "bad multipart upload"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_gets_a_clear_4xx_and_the_server_carries_on(server, images, case):
    srv, _, version = server
    data, ctype, status, reason = BAD_INPUTS[case]
    got, answer = srv.predict(data, ctype)
    assert got == status and reason in answer["detail"], answer
    assert srv.predict(images["hat_40"].read_bytes())[0] == 200


@pytest.mark.parametrize(
    "name, status, reason",
    [("truncated", 422, "corrupt image: image file is truncated"), ("one_pixel", 200, None),
     ("16bit", 200, None)],
)  # fmt: skip
def test_odd_images_get_a_label_or_a_clear_reason(server, images, name, status, reason):
    srv, _, version = server
    got, answer = srv.predict(images[name].read_bytes(), "image/png")
    assert got == status, answer
    if reason:
        assert answer["detail"].startswith(reason)
    else:
        assert answer["label"] in ("hat", "pants", "shoes") and answer["model_version"] == version
    assert srv.predict(images["hat_40"].read_bytes())[0] == 200


def test_a_body_over_the_limit_is_refused_before_it_is_read(server, images):
    srv, _, _ = server
    # Content-Length says too much: 413 with only a few bytes of the body ever sent
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Content-Length: {MAX_BYTES * 50}\r\n\r\n"
    ).encode()
    reply = raw_exchange(srv.port, head, [b"\xff\xd8" * 10])
    assert reply.startswith(b"HTTP/1.1 413"), reply
    assert b"exceeds the limit" in reply
    # no Content-Length (chunked): cut off once the stream passes the limit, before its end
    head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n"
    chunk = b"%x\r\n" % 100_000 + b"\0" * 100_000 + b"\r\n"
    reply = raw_exchange(srv.port, head, [chunk] * (MAX_BYTES // 100_000 + 1))
    assert reply.startswith(b"HTTP/1.1 413"), reply
    body, ctype = multipart("file", "big.jpg", b"\0" * (MAX_BYTES + 1))
    assert srv.predict(body, ctype)[0] == 413
    assert srv.predict(images["hat_40"].read_bytes())[0] == 200


@pytest.mark.timeout(180)
def test_no_model_is_a_503_then_new_versions_are_picked_up_without_a_restart(tmp_path, images):
    models = tmp_path / "models"
    srv = Server(models, tmp_path / "server.log", "--max-batch-size", "4")
    try:
        srv.wait_listening()
        for path in ("/health", "/model"):
            status, answer = srv.request("GET", path)
            assert status == 503 and "materialize trained_model" in answer["detail"]
        status, answer = srv.predict(images["hat_40"].read_bytes())
        assert status == 503 and "materialize trained_model" in answer["detail"]

        first = write_model_atomically(models, tiny_model(seed=1))
        srv.wait_version(first)
        assert srv.predict(images["hat_40"].read_bytes())[1]["model_version"] == first

        second_bytes = tiny_model(seed=2)
        second = write_model_atomically(models, second_bytes)
        assert second != first
        srv.wait_version(second)
        status, answer = srv.predict(images["pants_97"].read_bytes())
        [expected] = batch_answers(second_bytes, second, [images["pants_97"]])
        assert status == 200 and answer["model_version"] == second
        assert answer["label"] == expected["TYPE"]
        assert abs(answer["confidence"] - expected["CONFIDENCE"]) < 1e-3

        (models / "model_trained.pt").write_bytes(b"not a model")  # a broken file: keep serving
        time.sleep(1)
        assert srv.predict(images["hat_40"].read_bytes())[1]["model_version"] == second
        assert srv.request("GET", "/model")[1]["batching"]["max_batch_size"] == 4
    finally:
        srv.stop()
    assert "could not be loaded" in srv.log.read_text()


def test_predict_command_classifies_files_and_reports_the_bad_ones(tmp_path, images):
    data = tiny_model()
    version = write_model_atomically(tmp_path / "models", data)
    bad = tmp_path / "notes.txt"
    bad.write_text("not a photo")
    good = [images["hat_40"], images["png"]]
    model_file = str(tmp_path / "models" / "model_trained.pt")
    env = {**os.environ, "PYTHONPATH": str(REPO), "CLOTHING_SERVE_MODEL_FILE": model_file}
    command = [sys.executable, "-m", "clothing_assets.serve", "predict"]
    done = subprocess.run(
        [*command, *map(str, good), str(bad)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    for file, line, want in zip(good, lines, batch_answers(data, version, good), strict=False):
        assert line == [str(file), want["TYPE"], f"{want['CONFIDENCE']:.4f}", version]
    assert lines[2][:2] == [str(bad), "ERROR"] and "not an image" in lines[2][2]


def test_predict_command_without_a_model_says_what_to_run(tmp_path, images, monkeypatch, capsys):
    monkeypatch.setenv("CLOTHING_SERVE_MODEL_FILE", str(tmp_path / "empty" / "model.pt"))
    assert main(["predict", str(images["hat_40"])]) == 2
    assert "CLOTHING_SERVE_MODEL_FILE" in capsys.readouterr().err  # the file it names is missing
    monkeypatch.delenv("CLOTHING_SERVE_MODEL_FILE")
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "local")
    monkeypatch.setenv("CLOTHING_DUCKDB_PATH", str(tmp_path / "empty.duckdb"))
    assert main(["predict", str(images["hat_40"])]) == 2  # a registry without a champion
    assert "materialize trained_model" in capsys.readouterr().err


def test_the_batcher_groups_concurrent_images_but_never_holds_a_lone_one(images):
    first = LoadedModel.from_bytes("one", tiny_model(seed=1))
    second = LoadedModel.from_bytes("two", tiny_model(seed=2))
    blobs = [f.read_bytes() for k, f in images.items() if k.split("_")[0] in COLOURS][:8]

    async def run(batch_size: int, models: list[LoadedModel]) -> tuple[list, Batcher, float]:
        batcher = Batcher(max_batch_size=batch_size, max_wait_ms=2000, decode_threads=2)
        batcher.start()
        try:
            started = time.perf_counter()
            await batcher.predict(first, blobs[0])
            lone = time.perf_counter() - started
            out = await asyncio.gather(
                *(batcher.predict(models[i % len(models)], b) for i, b in enumerate(blobs))
            )
        finally:
            await batcher.stop()
        return out, batcher, lone

    out, batcher, lone = asyncio.run(run(16, [first]))
    assert lone < 1.5  # far below the 2 s a batch may wait for images still being decoded
    assert (batcher.forwards, batcher.images) == (2, 9)
    alone = [first.probabilities([first.decode(b)])[0] for b in blobs]
    for got, want in zip(out, alone, strict=True):
        assert torch.allclose(got, want, atol=ATOL)

    # two versions in flight at once: never mixed in one forward pass, each answered by its own
    out, batcher, _ = asyncio.run(run(16, [first, second]))
    assert batcher.forwards == 3
    for i, (got, blob) in enumerate(zip(out, blobs, strict=True)):
        model = (first, second)[i % 2]
        assert torch.allclose(got, model.probabilities([model.decode(blob)])[0], atol=ATOL)

    _, batcher, _ = asyncio.run(run(1, [first]))
    assert batcher.forwards == 9  # batching off: one forward pass per image


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.timeout(180)
@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH (.ci/run installs it)")
def test_the_page_classifies_a_photo_and_explains_a_bad_file(server, images, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    srv, _, version = server
    _, expected = srv.predict(images["shoes_300"].read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a photo")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(srv.url + "/")
            page.set_input_files("#file", str(images["shoes_300"]))
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.inner_text("#label") == expected["label"]
            assert version in page.inner_text("#version")
            assert page.locator("#top .bar").count() == 3
            assert page.eval_on_selector("#preview", "img => img.naturalWidth") == 300
            page.set_input_files("#file", str(notes))
            page.wait_for_selector("#message:not([hidden])", timeout=30_000)
            assert "not an image in a supported format" in page.inner_text("#message")
            assert page.is_hidden("#result")
        finally:
            browser.close()


@pytest.mark.timeout(180)
def test_the_server_follows_the_registrys_champion(local_env, images):
    """The default source: whatever version the registry promotes is served, no restart."""
    srv = Server(None, local_env.root / "server.log")
    try:
        srv.wait_listening()
        status, answer = srv.request("GET", "/health")
        assert status == 503 and "promote" in answer["detail"]
        first = register_model(local_env, tiny_model(seed=1))
        srv.wait_version(first)
        second_bytes = tiny_model(seed=2)
        second = register_model(local_env, second_bytes)  # promoted: the new champion
        srv.wait_version(second)
        status, answer = srv.predict(images["pants_97"].read_bytes())
        [expected] = batch_answers(second_bytes, second, [images["pants_97"]])
        assert status == 200 and answer["model_version"] == second
        assert answer["label"] == expected["TYPE"]
        first_again = register_model(local_env, tiny_model(seed=1))  # a rollback
        assert first_again == first
        srv.wait_version(first)
    finally:
        srv.stop()
