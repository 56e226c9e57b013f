"""Read one stage file: a local file, an object-store key or a presigned HTTP(S) URL.

Every reference is read literally on the filesystem it names; nothing is ever handed to
fsspec's URL parsing, so `::` chaining or any other protocol syntax inside a stage path means
nothing (a folder named `x::` is just a folder).

- Local stages: `stage_file_url` resolves the path once (it must stay inside the stage and be
  a regular file) and hands out the resolved path. The reader walks that path from `/` one
  component at a time with O_NOFOLLOW, so a link swapped in after the check is refused rather
  than followed, and opens the file non-blocking, so a FIFO never hangs it; the open file must
  be a regular file.
- Object stores (`s3://`, `gs://`, `memory://`, ...): the key goes to that protocol's own
  filesystem object, which strips its protocol and nothing else.
- HTTP(S) (presigned URLs): timeouts, a deadline on the whole read, bounded retries of
  transient failures (timeouts, dropped or truncated bodies, 408/429/5xx).

Every read is capped at `ReadLimits.max_bytes`. Failures raise OSError subclasses whose
message becomes the row's ERROR; no message ever holds a URL (presigned ones carry
signatures). `read_file` also says which version of the file was read (`OpenedFile`: the
open file's size and time for a local file, the object's size and ETag for an object store),
so that a reader can tell bytes that are no longer what the catalog listed.
"""

from __future__ import annotations

import base64
import errno
import http.client
import os
import posixpath
import random
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

from clothing_assets.settings import VARIABLES, setting
from clothing_assets.stage.listing import etag_of, inside, unsafe_reason

REFUSED_READ = "refused: the path leads outside the stage or is not a regular file; not read"
URL_REFUSED = "URL refused"
HTTP_ATTEMPTS = 3
_PROTOCOL = re.compile(r"^([a-z][a-z0-9+.-]*)://")
_CHUNK = 1 << 16


class UnsafePathError(OSError):
    """A stage path that would be read outside the stage; the message is the row's ERROR."""


class FileTooLargeError(OSError):
    """A file over `ReadLimits.max_bytes`; refused before (or while) it is read."""


class URLRefusedError(OSError):
    """The server refused an HTTP(S) URL (4xx: an expired or revoked presigned URL). Reading
    again needs a fresh URL, which only the client holding the warehouse can mint; the message
    (never the URL, which carries a signature) starts with URL_REFUSED."""


def url_refused(error: str | None) -> bool:
    """Whether a row's ERROR says its URL was refused, so that a fresh URL may succeed."""
    return bool(error) and URL_REFUSED in str(error)


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one file read; passed to Dask workers with each batch."""

    timeout_s: float = VARIABLES["CLOTHING_HTTP_TIMEOUT_SECONDS"].default
    deadline_s: float = VARIABLES["CLOTHING_HTTP_DEADLINE_SECONDS"].default
    max_bytes: int = VARIABLES["CLOTHING_MAX_FILE_BYTES"].default

    @classmethod
    def from_settings(cls) -> ReadLimits:
        return cls(
            timeout_s=setting("CLOTHING_HTTP_TIMEOUT_SECONDS"),
            deadline_s=setting("CLOTHING_HTTP_DEADLINE_SECONDS"),
            max_bytes=setting("CLOTHING_MAX_FILE_BYTES"),
        )


def _too_large(size: int, limits: ReadLimits) -> FileTooLargeError:
    return FileTooLargeError(
        f"file too large: {size:,} bytes is over the limit of {limits.max_bytes:,} "
        "(CLOTHING_MAX_FILE_BYTES); not read"
    )


def stage_file_url(base: str, relative_path: str) -> str | None:
    """What a reader is given for `relative_path` in the stage at `base`, or None when reading
    it would leave the stage: an unsafe path, or (on a local folder) a file that is, or
    resolves through, a symbolic link to outside the stage, or that is not a regular file.

    Local stages answer the file's resolved absolute path; object stores `protocol://key`.
    """
    if unsafe_reason(relative_path) is not None:
        return None
    try:
        fs, root = fsspec.core.url_to_fs(base)  # the configured location: trusted
    except (ImportError, ValueError):
        return posixpath.join(base.rstrip("/"), relative_path)  # the reader reports the error
    if isinstance(fs, LocalFileSystem):
        path = os.path.join(root, *relative_path.split("/"))
        real, real_root = os.path.realpath(path), os.path.realpath(root)
        if not inside(real, real_root):
            return None
        try:
            if not stat.S_ISREG(os.stat(real).st_mode):
                return None
        except OSError:
            pass  # missing: the reader reports "unreadable file"
        return real
    return fs.unstrip_protocol(posixpath.join(root.rstrip("/"), relative_path))


@dataclass(frozen=True)
class OpenedFile:
    """Which version of a file `read_file` read, as far as its source says: the size, and the
    modification time of a local file (from `fstat` of the open file) or the ETag of an
    object (from the details the open took). None where the source does not say (a
    presigned HTTP(S) URL)."""

    size: int | None = None
    modified: datetime | None = None
    etag: str | None = None

    def differs_from(self, size: Any, modified: Any, etag: Any) -> str | None:
        """How this file differs from a catalog row's SIZE, LAST_MODIFIED and ETAG, or None
        when nothing known differs. A row without LAST_MODIFIED did not come from a stage
        listing (a file scored outside the catalog): only a listed ETag is compared then."""
        if self.etag is not None and etag is not None and not pd.isna(etag) and self.etag != etag:
            return f"ETag {etag} listed, {self.etag} read"
        if modified is None or pd.isna(modified):
            return None
        if self.size is not None and self.size != int(size):
            return f"size {int(size):,} listed, {self.size:,} read"
        if self.modified is not None and _utc(self.modified) != _utc(modified):
            return f"modified {_utc(modified)} listed, {_utc(self.modified)} read"
        return None


def _utc(value: Any) -> pd.Timestamp:
    """`value` as a UTC Timestamp, to compare times from pandas, DuckDB and the OS."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def read_bytes(url: str | None, limits: ReadLimits | None = None) -> bytes:
    """Read one file named by `stage_file_url` or a presigned http(s) URL, within `limits`
    (default: from the settings). None (a path `stage_file_url` refused) raises
    UnsafePathError without touching anything."""
    return read_file(url, limits)[0]


def read_file(url: str | None, limits: ReadLimits | None = None) -> tuple[bytes, OpenedFile]:
    """`read_bytes`, and which version of the file the bytes are (see OpenedFile)."""
    if url is None:
        raise UnsafePathError(REFUSED_READ)
    limits = limits or ReadLimits.from_settings()
    if url.startswith(("https://", "http://")):
        return _read_http(url, limits), OpenedFile()
    if url.startswith("/"):
        return _read_local(url, limits)
    match = _PROTOCOL.match(url)
    if match is None:
        raise UnsafePathError(f"{REFUSED_READ} (not an absolute path or URL)")
    return _read_object(fsspec.filesystem(match.group(1)), url, limits)


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


def _open_without_links(path: str) -> int:
    """Open the resolved absolute `path` following no symbolic link at any component."""
    *folders, leaf = path.split("/")[1:]
    fd = os.open("/", _DIR_FLAGS)
    try:
        for depth, name in enumerate(folders, start=1):
            try:
                inner = os.open(name, _DIR_FLAGS | _NOFOLLOW, dir_fd=fd)
            except OSError as exc:  # a link (or a file) where a folder was
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafePathError(REFUSED_READ) from exc
                # named by its whole path: the bare name of a missing stage folder says little
                raise OSError(exc.errno, exc.strerror, "/" + "/".join(folders[:depth])) from exc
            os.close(fd)
            fd = inner
        try:
            return os.open(leaf, _FILE_FLAGS | _NOFOLLOW, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EMLINK):
                raise UnsafePathError(REFUSED_READ) from exc  # the file became a link
            raise OSError(exc.errno, exc.strerror, path) from exc
    finally:
        os.close(fd)


def _read_local(path: str, limits: ReadLimits) -> tuple[bytes, OpenedFile]:
    if "\x00" in path or os.path.normpath(path) != path:
        raise UnsafePathError(REFUSED_READ)
    fd = _open_without_links(path)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(REFUSED_READ)
        if info.st_size > limits.max_bytes:
            raise _too_large(info.st_size, limits)
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limits.max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits)
    # the open file's own size and time, as the listing took them (from its stat)
    return data, OpenedFile(info.st_size, datetime.fromtimestamp(info.st_mtime, tz=UTC))


def _client_network_errors() -> tuple[type[Exception], ...]:
    """The network errors of the object stores' clients that are no OSError (botocore's and
    aiohttp's under s3fs, gcsfs's HttpError): they end a read once the client's own retries
    are spent."""
    errors: list[type[Exception]] = []
    try:
        from botocore.exceptions import ConnectionError as BotocoreConnectionError
        from botocore.exceptions import HTTPClientError

        errors += [BotocoreConnectionError, HTTPClientError]
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        errors.append(ClientError)
    except ImportError:
        pass
    try:
        from gcsfs.retry import HttpError

        errors.append(HttpError)
    except ImportError:
        pass
    return tuple(errors)


def _read_object(fs, url: str, limits: ReadLimits) -> tuple[bytes, OpenedFile]:
    try:
        return _read_object_once(fs, url, limits)
    except _client_network_errors() as exc:
        # an OSError like every other failed read: its row is read again by the next run
        raise OSError(f"{type(exc).__name__}: {exc}") from exc


def _read_object_once(fs, url: str, limits: ReadLimits) -> tuple[bytes, OpenedFile]:
    with fs.open(url, "rb") as handle:  # the filesystem strips its own protocol, nothing more
        size = getattr(handle, "size", None)
        if size is not None and size > limits.max_bytes:
            raise _too_large(size, limits)
        data = handle.read(limits.max_bytes + 1)
        # the details the open took (s3fs checks each ranged read against their ETag)
        details = getattr(handle, "details", None)
    if len(data) > limits.max_bytes:
        raise _too_large(len(data), limits)
    etag = etag_of(details) if isinstance(details, dict) else None
    return data, OpenedFile(size, None, etag)


def _http_request(url: str) -> urllib.request.Request:
    """A GET of `url`; credentials in it (user:token@) go into a Basic Authorization header,
    which urllib would otherwise take for part of the host name."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return urllib.request.Request(url)
    bare = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    user = urllib.parse.unquote(parts.username)
    token = base64.b64encode(f"{user}:{urllib.parse.unquote(parts.password or '')}".encode())
    return urllib.request.Request(bare, headers={"Authorization": f"Basic {token.decode()}"})


def _read_http_once(url: str, limits: ReadLimits, deadline: float) -> bytes:
    """One GET, read in chunks until the body ends or `deadline` passes."""
    timeout = max(0.1, min(limits.timeout_s, deadline - time.monotonic()))
    request = _http_request(url)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s)
        declared = response.headers.get("Content-Length")
        expected = int(declared) if declared and declared.isdigit() else None
        if expected is not None and expected > limits.max_bytes:
            raise _too_large(expected, limits)
        parts, total = [], 0
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"read did not finish within {limits.deadline_s:g}s "
                    "(CLOTHING_HTTP_DEADLINE_SECONDS)"
                )
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > limits.max_bytes:
                raise _too_large(total, limits)
    if expected is not None and total != expected:
        raise http.client.IncompleteRead(b"", expected - total)
    return b"".join(parts)


def _read_http(url: str, limits: ReadLimits) -> bytes:
    """A presigned URL: transient failures are retried with backoff until `deadline_s`; a 4xx
    raises URLRefusedError (a fresh URL may succeed)."""
    deadline = time.monotonic() + limits.deadline_s
    reason = ""
    for attempt in range(HTTP_ATTEMPTS):
        if attempt:
            pause = min(4.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5)
            if time.monotonic() + pause >= deadline:
                break
            time.sleep(pause)
        try:
            return _read_http_once(url, limits, deadline)
        except urllib.error.HTTPError as exc:
            if exc.code not in (408, 429) and exc.code < 500:
                raise URLRefusedError(
                    f"{URL_REFUSED}: HTTP {exc.code} {exc.reason} (expired or not allowed)"
                ) from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            reason = str(exc.reason)
        except (TimeoutError, ConnectionError, http.client.HTTPException) as exc:
            # IncompleteRead (a body shorter than its Content-Length) is an HTTPException,
            # not an OSError: retried like any transient failure
            reason = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            break
    raise OSError(f"HTTP read failed after {attempt + 1} attempts: {reason}")
