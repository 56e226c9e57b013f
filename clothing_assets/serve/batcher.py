"""Dynamic batching: concurrent requests share one forward pass, decoded off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from clothing_assets.serve.model import LoadedModel


class InferenceError(RuntimeError):
    """The forward pass failed: the server's fault, never the image's."""


@dataclass
class _Item:
    loaded: LoadedModel
    image: torch.Tensor
    future: asyncio.Future[torch.Tensor] = field(repr=False)


class Batcher:
    """Decodes each request in a thread pool, then classifies queued images together.

    A batch takes every queued image of the same model version, up to `max_batch_size`. It
    waits (at most `max_wait_ms`) only while other requests are still being decoded: a lone
    request runs at once. Forward passes run one at a time in their own thread, so torch's
    intra-op threads (set by the app) are never shared between two batches.
    """

    def __init__(self, *, max_batch_size: int, max_wait_ms: float, decode_threads: int) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self._decode_pool = ThreadPoolExecutor(max(1, decode_threads), "clothing-decode")
        self._forward_pool = ThreadPoolExecutor(1, "clothing-forward")
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._decoding = 0
        self._task: asyncio.Task[None] | None = None
        self.forwards = 0  # forward passes and the images they classified, for GET /model
        self.images = 0

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the loop and the thread pools."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._decode_pool.shutdown(wait=False, cancel_futures=True)
        self._forward_pool.shutdown(wait=False, cancel_futures=True)

    async def predict(self, loaded: LoadedModel, data: bytes) -> torch.Tensor:
        """The softmax probabilities of one file's image under `loaded`; raises
        ImageDecodeError (or what the decoder raised) for a file that is not a usable image."""
        loop = asyncio.get_running_loop()
        self._decoding += 1
        try:
            image = await loop.run_in_executor(self._decode_pool, loaded.decode, data)
        finally:
            self._decoding -= 1
            self._wake.set()  # a batch waiting for this decode need not wait any longer
        future: asyncio.Future[torch.Tensor] = loop.create_future()
        self._items.append(_Item(loaded, image, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            await self._forward(batch)

    async def _wait(self, timeout: float | None) -> bool:
        """Wait for news (a queued image or a finished decode); False on timeout."""
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _take_same(self, loaded: LoadedModel) -> _Item | None:
        for item in self._items:
            if item.loaded is loaded:
                self._items.remove(item)
                return item
        return None

    async def _collect(self) -> list[_Item]:
        """The next batch: the oldest queued image and its same-version followers."""
        while not self._items:
            await self._wait(None)
        first = self._items.popleft()
        batch = [first]
        deadline = asyncio.get_running_loop().time() + self.max_wait
        while len(batch) < self.max_batch_size:
            item = self._take_same(first.loaded)
            if item is not None:
                batch.append(item)
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if self._decoding == 0 or remaining <= 0 or not await self._wait(remaining):
                break
        return batch

    async def _forward(self, batch: list[_Item]) -> None:
        live = [item for item in batch if not item.future.done()]  # clients that went away
        if not live:
            return
        loaded = live[0].loaded
        loop = asyncio.get_running_loop()
        try:
            probs = await loop.run_in_executor(
                self._forward_pool, loaded.probabilities, [item.image for item in live]
            )
        except Exception as exc:  # handed to each waiting request
            for item in live:
                if not item.future.done():
                    item.future.set_exception(InferenceError(f"forward pass failed: {exc}"))
            return
        self.forwards += 1
        self.images += len(live)
        for item, row in zip(live, probs, strict=True):
            if not item.future.done():
                item.future.set_result(row)
