"""The model server under slow, stalled, oversized and vanishing clients: each is cut off by a
limit (request-head deadline, body deadline, in-flight byte budget, connection cap) with an
answer a plain client reads, while good requests keep being answered."""

from __future__ import annotations

import argparse
import json
import re
import select
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from clothing_assets.serve.app import ServeConfig
from clothing_assets.serve.cli import SERVE_FLAGS, add_commands, apply_serve_flags, main
from clothing_assets.serve.limits import BodyLimits
from clothing_assets.settings import setting
from clothing_assets_tests.support import CLASSES, COLOURS, write_image
from clothing_assets_tests.system.test_serve import (
    MAX_BYTES,
    Server,
    tiny_model,
    write_model_atomically,
)

HEAD_TIMEOUT = 2.0
BODY_TIMEOUT = 2.0
INFLIGHT_BYTES = 2_500_000
MAX_CONNECTIONS = 60
SLACK = 4.0  # a loaded machine's scheduling delay on top of a deadline
LIMITS = {
    "CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT),
    "CLOTHING_SERVE_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "CLOTHING_SERVE_MAX_INFLIGHT_BYTES": str(INFLIGHT_BYTES),
    "CLOTHING_SERVE_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}
HOST = b"Host: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a tiny model and short limits, set through the CLOTHING_SERVE_* variables."""
    root = tmp_path_factory.mktemp("limits")
    version = write_model_atomically(root / "models", tiny_model())
    srv = Server(root / "models", root / "server.log", env=LIMITS)
    try:
        srv.wait_listening()
        srv.wait_version(version)
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("img") / "hat.jpg"
    return write_image(path, COLOURS["hat"], seed=1, size=64).read_bytes()


def connect(port: int, data: bytes) -> socket.socket:
    """A connection that has sent `data` and then goes quiet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if data:
        sock.sendall(data)
    return sock


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes `sock` (EOF or reset; what it sends before is dropped) by
    `deadline`."""
    while True:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False


def answer_status(sock: socket.socket, deadline: float) -> tuple[int | None, bytes]:
    """The status and head of the answer on `sock` by `deadline` (None: no answer)."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            more = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not more:
            break
        reply += more
    if not reply.startswith(b"HTTP/1.1 "):
        return None, reply
    return int(reply[9:12]), reply.split(b"\r\n\r\n")[0].lower()


def assert_good_requests_answered(srv: Server, jpeg: bytes) -> None:
    assert srv.request("GET", "/health")[0] == 200
    status, answer = srv.predict(jpeg)
    assert status == 200 and answer["label"] in CLASSES, answer


@pytest.mark.timeout(90)
def test_half_sent_requests_are_closed_while_good_ones_are_answered(server, jpeg):
    quiet = [connect(server.port, b"") for _ in range(5)]
    half = [connect(server.port, b"POST /predict HTTP/1.1\r\n" + HOST) for _ in range(40)]
    drip = connect(server.port, b"P")
    started = time.monotonic()
    try:
        assert_good_requests_answered(server, jpeg)
        # one byte of the head every 0.2 s: a per-read timer never fires, the head's deadline does
        drip_open_for = None
        for byte in b"OST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            readable, _, _ = select.select([drip], [], [], 0.2)
            if readable and closed_by_server(drip, time.monotonic() + 1):
                drip_open_for = time.monotonic() - started
                break
            drip.sendall(bytes([byte]))
        assert drip_open_for is not None and drip_open_for < HEAD_TIMEOUT + SLACK
        deadline = started + HEAD_TIMEOUT + SLACK
        still_open = [s for s in quiet + half if not closed_by_server(s, deadline)]
        assert not still_open, f"{len(still_open)} of 45 connections still open"
        assert_good_requests_answered(server, jpeg)
    finally:
        for sock in [*quiet, *half, drip]:
            sock.close()


@pytest.mark.timeout(90)
def test_stalled_uploads_time_out_and_never_hold_more_than_the_byte_budget(server, jpeg):
    declared, sent = 900_000, 800_000  # each under the size cap; two fit the budget, six do not
    head = (
        b"POST /predict HTTP/1.1\r\n" + HOST + b"Content-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % declared
    )
    stalled = [connect(server.port, head + b"\xff" * sent) for _ in range(6)]
    started = time.monotonic()
    try:
        assert_good_requests_answered(server, jpeg)  # the budget's room left is enough for it
        deadline = started + BODY_TIMEOUT + SLACK
        answers = [answer_status(sock, deadline) for sock in stalled]
        assert Counter(status for status, _ in answers) == {408: 2, 503: 4}, answers
        assert all(b"connection: close" in reply for _, reply in answers)
        assert all(closed_by_server(sock, deadline + 1) for sock in stalled)
        assert_good_requests_answered(server, jpeg)
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.timeout(60)
def test_a_body_over_the_limit_gets_a_413_that_urllib_reads(server, jpeg):
    # 8 times the limit: more than the kernel's socket buffers absorb, so a server that answers
    # without reading the body leaves urllib still sending into a connection it has reset
    too_big = b"\xff" * (MAX_BYTES * 8)
    for data in (too_big, iter([too_big[:100_000]] * 80)):  # with Content-Length, then chunked
        request = urllib.request.Request(
            server.url + "/predict", data=data, headers={"Content-Type": "image/jpeg"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 413
        assert "exceeds the limit" in json.loads(refused.value.read())["detail"]
        assert_good_requests_answered(server, jpeg)


@pytest.mark.timeout(60)
def test_a_client_that_goes_away_mid_upload_is_one_log_line(server, jpeg):
    head = (
        b"POST /predict HTTP/1.1\r\n" + HOST + b"Content-Type: image/jpeg\r\n"
        b"Content-Length: 500000\r\n\r\n"
    )
    sock = connect(server.port, head + b"\xff" * 100_000)
    client = f"127.0.0.1:{sock.getsockname()[1]}"
    time.sleep(0.5)  # the server is reading the body when the client goes
    sock.close()
    deadline = time.monotonic() + 10
    while client not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log.read_text()
    [line] = [line for line in log.splitlines() if client in line]
    # the count is what the app had taken in when it heard of the close: at most what was sent
    said = re.fullmatch(
        rf"INFO: +client {client} went away during its upload to /predict "
        r"\((\d+) of 500000 bytes received\)",
        line,
    )
    assert said and int(said[1]) <= 100_000, line
    assert "Traceback" not in log
    assert_good_requests_answered(server, jpeg)


@pytest.mark.timeout(60)
def test_connections_beyond_the_cap_get_a_503_until_idle_ones_are_closed(server, jpeg):
    idle = [connect(server.port, b"") for _ in range(MAX_CONNECTIONS)]
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/health", timeout=30)
        assert refused.value.code == 503
        deadline = time.monotonic() + HEAD_TIMEOUT + SLACK
        assert all(closed_by_server(sock, deadline) for sock in idle)
        assert_good_requests_answered(server, jpeg)
    finally:
        for sock in idle:
            sock.close()


def test_each_limit_is_a_serve_flag_with_its_variable(monkeypatch, capsys):
    for name in SERVE_FLAGS.values():
        monkeypatch.setenv(name, "")  # blank: the default; each put back as it was after
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["serve", "--max-connections", "7", "--header-timeout", "2.5", "--body-timeout", "9",
         "--max-inflight-bytes", "30000000", "--docs", "--trusted-hosts", "a.example, B.example",
         "--max-bytes", "3000000", "--discard-bytes", "0"]
    )  # fmt: skip
    options = apply_serve_flags(args)
    assert options["limit_concurrency"] == 7
    assert options["http"] == "clothing_assets.serve.protocol:HeadDeadlineProtocol"
    assert setting("CLOTHING_SERVE_HEADER_TIMEOUT_SECONDS") == 2.5
    config = ServeConfig.from_settings()
    assert (config.body_timeout, config.max_inflight_bytes, config.docs) == (9.0, 30_000_000, True)
    assert config.trusted_hosts == ("a.example", "b.example")
    assert config.body_limits() == BodyLimits(max_bytes=3_000_000, timeout=9.0, discard_bytes=0)
    # a value the flag's own parsing refuses names the flag; one refused only with the other
    # settings (a budget below the size cap) names the variable it became
    for flags, named, variable in (
        (["--trusted-hosts", " , "], "CLOTHING_SERVE_TRUSTED_HOSTS", None),
        (["--body-timeout", "0"], "argument --body-timeout", "CLOTHING_SERVE_BODY_TIMEOUT_SECONDS"),
        (
            ["--max-inflight-bytes", "1000"],
            "CLOTHING_SERVE_MAX_INFLIGHT_BYTES=1000 is below",
            "CLOTHING_SERVE_MAX_INFLIGHT_BYTES",
        ),
    ):
        assert _exit_status(["serve", *flags]) == 2
        assert named in capsys.readouterr().err
        monkeypatch.setenv(variable or named, "")


def _exit_status(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or argparse exits with it."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
