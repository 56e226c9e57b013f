"""Dynamic batching: concurrent requests share one forward pass, decoded off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from clothing_assets.ml.threads import use_threads_here
from clothing_assets.serve.model import LoadedModel


class InferenceError(RuntimeError):
    """The forward pass failed: the server's fault, never the image's."""


@dataclass(frozen=True)
class _Decoded:
    """A lone request's image, handed back to be batched with requests that came meanwhile."""

    image: torch.Tensor


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

    A request that arrives while the server is idle (nothing queued, decoding or classifying)
    is decoded and classified in one job on the forward thread, without the round trip from a
    decode thread through the event loop to the forward thread. If another request arrives
    while it is being decoded, its image is queued first for the next batch instead, so a burst
    is still classified together.
    """

    def __init__(
        self, *, max_batch_size: int, max_wait_ms: float, decode_threads: int,
        forward_threads: int = 1,
    ) -> None:  # fmt: skip
        self.max_batch_size = max(1, max_batch_size)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self._decode_pool = ThreadPoolExecutor(max(1, decode_threads), "clothing-decode")
        # the one thread with torch's intra-op threads: the app keeps every other at one
        # (`ml.threads`: a process with several OpenMP teams runs them 3x slower here)
        self._forward_pool = ThreadPoolExecutor(
            1, "clothing-forward", initializer=use_threads_here, initargs=(forward_threads,)
        )
        self._items: deque[_Item] = deque()
        self._wake = asyncio.Event()
        self._decoding = 0
        self._busy = False  # a lone job or a batch holds the forward thread
        self._arrivals = 0  # requests so far: a lone job sees whether others came meanwhile
        self._task: asyncio.Task[None] | None = None
        self.forwards = 0  # forward passes and the images they classified, for GET /model
        self.images = 0

    def torch_threads(self) -> dict[str, int]:
        """The torch threads of a forward pass and of a decode, as their threads see them."""
        return {
            "forward": self._forward_pool.submit(torch.get_num_threads).result(),
            "decode": self._decode_pool.submit(torch.get_num_threads).result(),
        }

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
        self._arrivals += 1
        handed_back = False
        if not (self._busy or self._items or self._decoding):
            image = await self._alone(loaded, data)
            if not isinstance(image, _Decoded):
                return image
            image, handed_back = image.image, True
        else:
            image = await self._decode(loaded, data)
        future: asyncio.Future[torch.Tensor] = asyncio.get_running_loop().create_future()
        item = _Item(loaded, image, future)
        if handed_back:  # it came before the requests queued while it was decoded
            self._items.appendleft(item)
        else:
            self._items.append(item)
        self._wake.set()
        return await future

    async def _decode(self, loaded: LoadedModel, data: bytes) -> torch.Tensor:
        """`data`'s image, decoded in the decode pool."""
        self._decoding += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._decode_pool, loaded.decode, data
            )
        finally:
            self._decoding -= 1
            self._wake.set()  # a batch waiting for this decode need not wait any longer

    async def _alone(self, loaded: LoadedModel, data: bytes) -> torch.Tensor | _Decoded:
        """Decode and classify on the forward thread, holding it: the probabilities, or the
        decoded image when others arrived meanwhile (to be batched with theirs). Raises what
        the decoder raised, or InferenceError."""
        self._busy = True
        try:
            out = await asyncio.get_running_loop().run_in_executor(
                self._forward_pool, self._decode_then_classify, loaded, data, self._arrivals
            )
        finally:
            self._busy = False
            self._wake.set()  # the batcher waits for the forward thread to be free
        if isinstance(out, torch.Tensor):
            self.forwards += 1
            self.images += 1
        return out

    def _decode_then_classify(
        self, loaded: LoadedModel, data: bytes, arrivals: int
    ) -> torch.Tensor | _Decoded:
        image = loaded.decode(data)
        if self._arrivals != arrivals:  # read across threads: a stale count only delays a batch
            return _Decoded(image)
        try:
            return loaded.probabilities([image])[0]
        except Exception as exc:  # the forward pass's failure, never the image's
            raise InferenceError(f"forward pass failed: {exc}") from exc

    async def _run(self) -> None:
        while True:
            while self._busy or not self._items:
                await self._wait(None)
            self._busy = True
            try:
                await self._forward(await self._collect())
            finally:
                self._busy = False

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
