"""uvicorn's HTTP protocol with a deadline for the request head.

uvicorn closes an idle keep-alive connection, but any byte received cancels that timer, and a
connection that never completes its first request head is never closed: a client can hold
connections open for ever by sending a few bytes now and then. Here every connection must
complete a request head within CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS of opening, or of the
answer to its previous request, or it is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from clothing_assets.settings import setting

try:  # uvicorn's own choice: httptools when it is installed, else h11
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Fastest
except ImportError:  # pragma: no cover - depends on the environment
    _Fastest = H11Protocol  # type: ignore[assignment,misc]


class _HeadDeadline:
    """Closes a connection whose request head is late (see the module); mixed into one of
    uvicorn's HTTP protocols, whose attributes it uses."""

    app: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout: float = setting("CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS")
        self._head_timer: asyncio.TimerHandle | None = None
        app = self.app

        async def head_complete(scope: Any, receive: Any, send: Any) -> None:
            self._disarm_head_deadline()
            await app(scope, receive, send)

        self.app = head_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # a pipelined request already in hand has its head: no deadline for it
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class HeadDeadlineProtocol(_HeadDeadline, _Fastest):  # type: ignore[misc]
    """What `clothing-assets serve` runs: httptools' protocol when installed, else h11's."""


class H11HeadDeadlineProtocol(_HeadDeadline, H11Protocol):  # type: ignore[misc]
    """The same on h11's protocol."""
