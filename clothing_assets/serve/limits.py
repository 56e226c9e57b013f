"""What one upload may cost the server: its size, how long its body may take to arrive, and
its share of the bytes all requests in flight may hold together."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from clothing_assets.settings import SettingsError


class Refused(Exception):
    """A request the server will not take: `status` and `detail` are the answer; `discard`
    bytes of the body's rest are to be read and dropped after it, until `deadline`."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after
        self.discard, self.deadline = 0, 0.0

    def response(self) -> RefusalResponse:
        """The answer, sent before the body's rest is dropped."""
        headers = {"Connection": "close"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return RefusalResponse(
            {"detail": self.detail}, self.status, headers, self.discard, self.deadline
        )


class RefusalResponse(JSONResponse):
    """A JSON answer sent whole at once; then up to `discard` bytes of the request body that
    is still coming are read and dropped (until `deadline` on the event loop's clock) before
    the connection closes. A client such as urllib sends its whole body before it reads, and
    a server that closes on unread bytes resets the connection, which throws away the answer
    in the client's buffer: the client would see a reset instead of the answer."""

    def __init__(
        self,
        content: dict[str, str],
        status_code: int,
        headers: dict[str, str],
        discard: int,
        deadline: float,
    ) -> None:
        super().__init__(content, status_code=status_code, headers=headers)
        self.discard, self.deadline = discard, deadline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": True})
        if self.discard > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self.deadline):
                    await _discard(receive, self.discard)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class ClientGone(Exception):
    """The client closed its connection before its whole body arrived."""

    def __init__(self, received: int, declared: int | None) -> None:
        of = f" of {declared}" if declared is not None else ""
        super().__init__(f"{received}{of} bytes received")


def check_budget(max_bytes: int, max_inflight_bytes: int) -> None:
    """SettingsError when the in-flight budget could never take one upload of the largest
    size."""
    if max_inflight_bytes < max_bytes:
        raise SettingsError(
            f"CLOTHING_SERVE_MAX_INFLIGHT_BYTES={max_inflight_bytes} is below "
            f"CLOTHING_SERVE_MAX_BYTES={max_bytes}: an upload of the largest size would never "
            "be taken; raise the first or lower the second"
        )


@dataclass(frozen=True)
class BodyLimits:
    """The per-request limits (the CLOTHING_SERVE_* settings of the same meaning)."""

    max_bytes: int
    timeout: float
    discard_bytes: int


class ByteBudget:
    """Request-body bytes held at once by one server process, all requests together. The
    event loop is the only user, so no lock is needed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, held: list[int], size: int) -> None:
        """Count `size` more bytes against the budget, noted in `held`; Refused (503) when
        they do not fit."""
        if self.used + size > self.limit:
            raise Refused(
                503,
                f"the server already holds its limit of uploads in flight ({self.limit} bytes, "
                "CLOTHING_SERVE_MAX_INFLIGHT_BYTES): retry shortly",
                retry_after=1,
            )
        self.used += size
        held[0] += size

    def give_back(self, held: list[int]) -> None:
        """Return what `held` took."""
        self.used -= held[0]
        held[0] = 0


async def read_body(
    request: Request, limits: BodyLimits, budget: ByteBudget, held: list[int]
) -> bytes:
    """The whole request body, its bytes counted in `held` against `budget`.

    Raises Refused: 413 past `max_bytes`, 503 past the budget, 408 when the body is not in
    after `timeout` seconds (a 413 or 503 drops the body's rest after the answer, see
    `_plan_discard`). Raises ClientGone when the client left.
    """
    deadline = asyncio.get_running_loop().time() + limits.timeout
    declared_text = request.headers.get("content-length", "")
    declared = int(declared_text) if declared_text.isdigit() else None
    received = [0]
    try:
        async with asyncio.timeout_at(deadline):
            return await _collect(request, limits.max_bytes, declared, budget, held, received)
    except TimeoutError:
        raise Refused(
            408,
            f"the request body did not arrive within {limits.timeout:g} s "
            "(CLOTHING_SERVE_BODY_TIMEOUT_SECONDS)",
        ) from None
    except Refused as refused:
        _plan_discard(request, refused, limits, deadline, received[0])
        raise


def refuse_unread(request: Request, limits: BodyLimits, status: int, detail: str) -> Refused:
    """The refusal of a request none of whose body has been read: sent, then the body
    dropped."""
    refused = Refused(status, detail)
    deadline = asyncio.get_running_loop().time() + limits.timeout
    _plan_discard(request, refused, limits, deadline, 0)
    return refused


def _plan_discard(
    request: Request, refused: Refused, limits: BodyLimits, deadline: float, received: int
) -> None:
    """Ask `refused` to drop the body's rest when it is at most `discard_bytes`, unless the
    client sent `Expect: 100-continue` and waits for the answer before it sends the body."""
    waiting = request.headers.get("expect", "").lower() == "100-continue" and not received
    declared = request.headers.get("content-length", "")
    left = int(declared) - received if declared.isdigit() else None
    if not waiting and (left is None or left <= limits.discard_bytes):
        refused.discard, refused.deadline = limits.discard_bytes, deadline


async def _collect(
    request: Request,
    max_bytes: int,
    declared: int | None,
    budget: ByteBudget,
    held: list[int],
    received: list[int],
) -> bytes:
    if declared is not None:
        if declared > max_bytes:
            raise _too_large(f"body of {declared} bytes", max_bytes)
        budget.take(held, declared)  # at once, before the client sends it
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientGone(received[0], declared)
        chunk = message.get("body", b"")
        received[0] += len(chunk)
        if received[0] > max_bytes:
            raise _too_large("body", max_bytes)
        if declared is None:
            budget.take(held, len(chunk))
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _discard(receive: Receive, most: int) -> None:
    """Read and drop up to `most` more bytes of the body, or until it ends or the client
    leaves."""
    dropped = 0
    while dropped <= most:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _too_large(what: str, max_bytes: int) -> Refused:
    return Refused(413, f"{what} exceeds the limit of {max_bytes} bytes")
