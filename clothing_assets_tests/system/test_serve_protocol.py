"""The request-head deadline on both of uvicorn's HTTP protocols (httptools' when installed,
h11's otherwise): a real uvicorn on 127.0.0.1 serving a small ASGI app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from clothing_assets.serve import protocol
from clothing_assets_tests.support.processes import free_port

DEADLINE = 0.5
SLACK = 3.0
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def hello(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"5")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture(params=["HeadDeadlineProtocol", "H11HeadDeadlineProtocol"])
def port(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    if request.param == "HeadDeadlineProtocol" and protocol.HeadDeadlineProtocol.__mro__[2] is (
        protocol.H11Protocol
    ):
        pytest.skip("httptools is not installed: HeadDeadlineProtocol is h11's, tested below")
    monkeypatch.setenv("CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS", str(DEADLINE))
    port = free_port()
    config = uvicorn.Config(
        hello, host="127.0.0.1", port=port, http=getattr(protocol, request.param),
        lifespan="off", log_level="warning", timeout_keep_alive=60,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(30)


def exchange(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    reply = b""
    while not reply.endswith(b"hello"):
        more = sock.recv(4096)
        assert more, reply
        reply += more
    return reply


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes `sock`, None if it is still open after `seconds`."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        data = b""
    except TimeoutError:
        return None
    assert data == b"", data
    return time.monotonic() - started


def test_a_late_head_closes_the_connection_and_others_are_served(port):
    with (
        socket.create_connection(("127.0.0.1", port)) as quiet,
        socket.create_connection(("127.0.0.1", port)) as half,
        socket.create_connection(("127.0.0.1", port)) as good,
    ):
        half.sendall(b"GET / HTTP/1.1\r\nHost: 127")
        assert exchange(good, GET).startswith(b"HTTP/1.1 200")
        assert closed_within(quiet, DEADLINE + SLACK) is not None
        assert closed_within(half, DEADLINE + SLACK) is not None
    with socket.create_connection(("127.0.0.1", port)) as later:
        assert exchange(later, GET).startswith(b"HTTP/1.1 200")


def test_the_deadline_is_for_the_whole_head_and_restarts_after_each_answer(port):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        for piece in (GET[:10], GET[10:20], GET[20:]):  # slow but in time: answered
            sock.sendall(piece)
            time.sleep(DEADLINE / 5)
        assert exchange(sock, b"").startswith(b"HTTP/1.1 200")
        time.sleep(DEADLINE / 2)
        assert exchange(sock, GET).startswith(b"HTTP/1.1 200")  # the clock restarted
        started = time.monotonic()
        drip = b"GET / HTTP/1.1\r\nX-Slow: " + b"a" * 100  # a byte every 0.1 s, never complete
        for byte in drip[: int((DEADLINE + SLACK) / 0.1)]:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
            if closed_within(sock, 0.01) is not None:
                break
        assert time.monotonic() - started < DEADLINE + SLACK
