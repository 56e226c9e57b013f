"""The batcher's path for a request that finds the server idle: decoded and classified in one
job on the forward thread, yet a burst or a request arriving meanwhile is still batched."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from clothing_assets.ml.images import ImageDecodeError
from clothing_assets.serve.batcher import Batcher, InferenceError
from clothing_assets.serve.model import LoadedModel
from clothing_assets_tests.support import COLOURS, write_image
from clothing_assets_tests.support.models import tiny_model_bytes

WAIT = 30  # seconds a test waits for a thread at most: a hang fails instead of blocking


@dataclass(frozen=True)
class Recorded(LoadedModel):
    """A real model that records which thread decoded and classified what; `decode_gate` and
    `forward_gate` (when given) hold those steps until the test opens them."""

    calls: list[tuple[str, str, int]] = field(default_factory=list)
    decode_gate: threading.Event | None = None
    forward_gate: threading.Event | None = None
    forwarding: threading.Event = field(default_factory=threading.Event)
    fail: bool = False

    def decode(self, data: bytes) -> torch.Tensor:
        if self.decode_gate is not None:
            assert self.decode_gate.wait(WAIT)
        image = super().decode(data)
        self.calls.append(("decode", threading.current_thread().name, 1))
        return image

    def probabilities(self, images: list[torch.Tensor]) -> torch.Tensor:
        self.calls.append(("forward", threading.current_thread().name, len(images)))
        self.forwarding.set()
        if self.forward_gate is not None:
            assert self.forward_gate.wait(WAIT)
        if self.fail:
            raise RuntimeError("the forward pass ran out of memory")
        return super().probabilities(images)


@pytest.fixture(scope="module")
def plain() -> LoadedModel:
    return LoadedModel.from_bytes("tiny", tiny_model_bytes())


def recorded(plain: LoadedModel, **kwargs) -> Recorded:
    """`plain`'s model, recording (see Recorded)."""
    return Recorded(**vars(plain), **kwargs)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One intra-op thread for these tiny passes: on a busy machine, two threads waiting on
    each other at every layer make a 32 px pass take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    root: Path = tmp_path_factory.mktemp("lone")
    colours = list(COLOURS.values())
    return [write_image(root / f"{i}.jpg", colours[i % 3], seed=i).read_bytes() for i in range(8)]


def batcher(max_wait_ms: float = 2000) -> Batcher:
    return Batcher(max_batch_size=16, max_wait_ms=max_wait_ms, decode_threads=2)


def steps(model: Recorded) -> list[tuple[str, str, int]]:
    """The recorded calls, thread names without the pool's worker number."""
    return [(step, name.rsplit("_", 1)[0], n) for step, name, n in model.calls]


def test_a_lone_request_is_decoded_and_classified_in_one_job_on_the_forward_thread(plain, blobs):
    model = recorded(plain)

    async def run() -> tuple[list[torch.Tensor], Batcher]:
        serving = batcher()
        serving.start()
        try:
            return [await serving.predict(model, blob) for blob in blobs[:3]], serving
        finally:
            await serving.stop()

    out, serving = asyncio.run(run())
    one_job = [("decode", "clothing-forward", 1), ("forward", "clothing-forward", 1)]
    assert steps(model) == one_job * 3
    assert (serving.forwards, serving.images) == (3, 3)
    for got, blob in zip(out, blobs, strict=False):
        assert torch.allclose(got, plain.probabilities([plain.decode(blob)])[0], atol=1e-5)


def test_a_burst_arriving_while_the_first_is_decoded_is_one_batch(plain, blobs):
    gate = threading.Event()
    model = recorded(plain, decode_gate=gate)

    async def run() -> tuple[list[torch.Tensor], Batcher]:
        serving = batcher()
        serving.start()
        try:
            tasks = [asyncio.create_task(serving.predict(model, blob)) for blob in blobs]
            await asyncio.sleep(0)  # every request has arrived; their decodes wait for the gate
            gate.set()
            return await asyncio.wait_for(asyncio.gather(*tasks), WAIT), serving
        finally:
            await serving.stop()

    out, serving = asyncio.run(run())
    assert (serving.forwards, serving.images) == (1, 8)
    assert [c for c in steps(model) if c[0] == "forward"] == [("forward", "clothing-forward", 8)]
    assert ("decode", "clothing-forward", 1) in steps(model)  # the first one's, handed back
    for got, blob in zip(out, blobs, strict=True):
        assert torch.allclose(got, plain.probabilities([plain.decode(blob)])[0], atol=2e-3)


def test_requests_arriving_during_a_lone_forward_pass_wait_for_it_and_share_one(plain, blobs):
    gate = threading.Event()
    model = recorded(plain, forward_gate=gate)

    async def run() -> Batcher:
        serving = batcher(max_wait_ms=0)  # a batch takes only what is queued: no waiting
        serving.start()
        try:
            lone = asyncio.create_task(serving.predict(model, blobs[0]))
            assert await asyncio.to_thread(model.forwarding.wait, WAIT)
            later = [asyncio.create_task(serving.predict(model, b)) for b in blobs[1:5]]
            while sum(step == "decode" for step, _, _ in model.calls) < 5:
                await asyncio.sleep(0.01)
            for _ in range(5):  # the loop queues each decoded image
                await asyncio.sleep(0)
            gate.set()
            await asyncio.wait_for(asyncio.gather(lone, *later), WAIT)
            return serving
        finally:
            gate.set()
            await serving.stop()

    serving = asyncio.run(run())
    assert [n for step, _, n in model.calls if step == "forward"] == [1, 4]
    assert (serving.forwards, serving.images) == (2, 5)


def test_a_lone_requests_failures_are_the_images_or_the_servers_and_serving_goes_on(plain, blobs):
    failing, working = recorded(plain, fail=True), recorded(plain)

    async def run() -> tuple[torch.Tensor, Batcher]:
        serving = batcher()
        serving.start()
        try:
            with pytest.raises(ImageDecodeError):
                await serving.predict(working, b"not an image at all")
            with pytest.raises(InferenceError, match="forward pass failed: .*out of memory"):
                await serving.predict(failing, blobs[0])
            return await asyncio.wait_for(serving.predict(working, blobs[0]), WAIT), serving
        finally:
            await serving.stop()

    out, serving = asyncio.run(run())
    assert out.shape == (3,)
    assert (serving.forwards, serving.images) == (1, 1)
