"""Answer only requests addressed to a trusted host name.

A web page on any site can make a browser send requests to 127.0.0.1 under its own name
(DNS rebinding); checking the Host header against a short list refuses them with a 400.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


def host_name(header: str) -> str:
    """The name in a Host header, without port, brackets or trailing dot, in lower case."""
    value = header.strip().lower()
    if value.startswith("["):  # an IPv6 address: [::1]:8000
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


class TrustedHosts:
    """ASGI middleware: a request whose Host is not in `hosts` (names, `*.domain` patterns,
    or `*` for any) gets a 400 that says which setting admits it."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str]) -> None:
        self.app = app
        self.hosts = frozenset(h.lower() for h in hosts if not h.startswith("*."))
        self.suffixes = tuple(h[1:].lower() for h in hosts if h.startswith("*."))

    def trusted(self, name: str) -> bool:
        return "*" in self.hosts or name in self.hosts or name.endswith(self.suffixes or ("\0",))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        name = host_name(Headers(scope=scope).get("host", ""))
        if name and self.trusted(name):
            await self.app(scope, receive, send)
            return
        shown = repr(name[:100]) if name else "(none)"
        detail = (
            f"this server does not answer to Host {shown}: if it should, add the name to "
            "`clothing-assets serve --trusted-hosts` (CLOTHING_SERVE_TRUSTED_HOSTS)"
        )
        answer = JSONResponse({"detail": detail}, status_code=400, headers={"Connection": "close"})
        await answer(scope, receive, send)
