"""Test-only: an HTTP server on 127.0.0.1 that serves stage files through expiring, signed
URLs, the way GET_PRESIGNED_URL's S3 URLs behave: a URL past its expiry, or with a bad
signature, is refused with 403; paths in `always_refuse` are always refused; paths in
`flaky` answer 503 on their first request (a transient failure the reader retries itself);
paths in `truncate` declare their full Content-Length but send only its first tenth and close;
paths in `trickle` send one byte every `trickle_s` seconds."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_KEY = b"test-only-signing-key"


@dataclass
class PresignServer:
    roots: dict[str, Path]  # stage name -> folder
    delay_s: float = 0.02  # per request, so that concurrent reads overlap measurably
    always_refuse: set[tuple[str, str]] = field(default_factory=set)  # (stage, path)
    flaky: set[tuple[str, str]] = field(default_factory=set)  # (stage, path)
    truncate: set[tuple[str, str]] = field(default_factory=set)  # (stage, path)
    trickle: set[tuple[str, str]] = field(default_factory=set)  # (stage, path)
    trickle_s: float = 0.5
    log: list[tuple[str, str, int]] = field(default_factory=list)  # (stage, path, status)
    max_in_flight: int = 0
    port: int = 0
    _in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def mint(self, stage: str, relative_path: str, *, expires_at: float) -> str:
        query = f"{stage}/{relative_path}|{expires_at:.3f}"
        signature = hmac.new(_KEY, query.encode(), hashlib.sha256).hexdigest()
        path = urllib.parse.quote(f"{stage}/{relative_path}")
        return f"http://127.0.0.1:{self.port}/{path}?expires={expires_at:.3f}&signature={signature}"

    def statuses(self, stage: str, relative_path: str) -> list[int]:
        return [s for st, p, s in self.log if (st, p) == (stage, relative_path)]

    @staticmethod
    def key_of(raw_path: str) -> tuple[str, str]:
        parsed = urllib.parse.urlsplit(raw_path)
        stage, _, relative = urllib.parse.unquote(parsed.path.lstrip("/")).partition("/")
        return stage, relative

    def _answer(self, raw_path: str) -> tuple[int, bytes]:
        parsed = urllib.parse.urlsplit(raw_path)
        stage, _, relative = urllib.parse.unquote(parsed.path.lstrip("/")).partition("/")
        query = dict(urllib.parse.parse_qsl(parsed.query))
        expires = query.get("expires", "0")
        expected = hmac.new(
            _KEY, f"{stage}/{relative}|{expires}".encode(), hashlib.sha256
        ).hexdigest()
        with self._lock:
            seen = [s for st, p, s in self.log if (st, p) == (stage, relative)]
        signed = hmac.compare_digest(expected, query.get("signature", ""))
        if not signed or time.time() > float(expires) or (stage, relative) in self.always_refuse:
            status = 403
        elif (stage, relative) in self.flaky and 503 not in seen:
            status = 503
        else:
            status = 200
        with self._lock:
            self.log.append((stage, relative, status))
        if status != 200:
            return status, b"<Error><Code>AccessDenied</Code><Message>Request has expired"
        return 200, (self.roots[stage] / relative).read_bytes()


@contextmanager
def serve(server: PresignServer) -> Iterator[PresignServer]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            with server._lock:
                server._in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server._in_flight)
            try:
                time.sleep(server.delay_s)
                status, body = server._answer(self.path)
            finally:
                with server._lock:
                    server._in_flight -= 1
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            key = server.key_of(self.path)
            if status == 200 and key in server.truncate:
                self.wfile.write(body[: len(body) // 10])
                self.wfile.flush()
                self.close_connection = True
                return
            if status == 200 and key in server.trickle:
                try:
                    for i in range(len(body)):
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                        time.sleep(server.trickle_s)
                except OSError:  # the reader gave up: what the test wants
                    pass
                return
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
