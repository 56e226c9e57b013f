"""List and read the files of a stage: a local folder or any fsspec URL (s3://, gs://, ...).

Path safety. A stage is read only inside its own location. `list_stage` never follows a path
out of it: on a local folder it walks without following symbolic links, and every entry it
cannot vouch for (a symbolic link that leads outside the stage or nowhere, a link to a folder,
a FIFO, socket or device, a name that is not valid UTF-8, a relative path with `..`, an empty
segment or a leading `/`) is still listed, with a one-line reason in its ERROR column and the
size and time of the entry itself, so that it lands in the catalog with that ERROR and is
never opened. `stage_file_url` checks again just before a file is read (the stage can change
after the listing) and answers None for a path it refuses; `read_bytes(None)` raises
UnsafePathError, whose message becomes the row's ERROR.
"""

from __future__ import annotations

import os
import posixpath
import random
import stat
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

import fsspec
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

LISTING_COLUMNS = ["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG", "FILE_URL", "ERROR"]

REFUSED_READ = "refused: the path leads outside the stage or is not a regular file; not read"


class StageLocationError(RuntimeError):
    """The stage's location does not exist or cannot be listed."""


class UnsafePathError(OSError):
    """A stage path that would be read outside the stage; the message is the row's ERROR."""


# HTTP(S) reads (presigned URLs): each attempt times out; transient failures (timeouts,
# dropped connections, 408/429/5xx) are retried a bounded number of times with backoff.
HTTP_TIMEOUT_S = 30.0
HTTP_ATTEMPTS = 3
URL_REFUSED = "URL refused"


class URLRefusedError(OSError):
    """The server refused an HTTP(S) URL (4xx: an expired or revoked presigned URL). Reading
    again needs a fresh URL, which only the client holding the warehouse can mint; the message
    (never the URL, which carries a signature) starts with URL_REFUSED."""


def url_refused(error: str | None) -> bool:
    """Whether a row's ERROR says its URL was refused, so that a fresh URL may succeed."""
    return bool(error) and URL_REFUSED in str(error)


def _read_http(url: str) -> bytes:
    reason = ""
    for attempt in range(HTTP_ATTEMPTS):
        if attempt:
            time.sleep(min(4.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.5))
        try:
            with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:  # noqa: S310
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code not in (408, 429) and exc.code < 500:
                raise URLRefusedError(
                    f"{URL_REFUSED}: HTTP {exc.code} {exc.reason} (expired or not allowed)"
                ) from None
            reason = f"HTTP {exc.code} {exc.reason}"
        except urllib.error.URLError as exc:
            reason = str(exc.reason)
        except (TimeoutError, ConnectionError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
    raise OSError(f"HTTP read failed after {HTTP_ATTEMPTS} attempts: {reason}")


def _modified(info: dict[str, Any]) -> datetime | None:
    # Each filesystem names its timestamp differently: local "mtime" (epoch seconds),
    # s3 "LastModified" (datetime), gcs "updated" (ISO string), memory "created".
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        stamp = pd.Timestamp(value)
        return (
            stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)
        ).to_pydatetime()
    return None


def unsafe_reason(relative_path: str) -> str | None:
    """Why `relative_path` may not be joined to a stage's location, or None when it is safe.

    Refused: an empty path, an absolute one, one with a `.`, `..` or empty segment, a NUL.
    """
    if not relative_path:
        return "unsafe path: empty"
    if "\x00" in relative_path:
        return "unsafe path: contains a NUL character"
    if relative_path.startswith("/"):
        return "unsafe path: absolute, not relative to the stage"
    parts = relative_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "unsafe path: '..', '.' or empty segment would leave or blur the stage"
    return None


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _entry(
    rel: str, size: int, modified: datetime | None, url: str, *, etag=None, error=None
) -> dict[str, Any]:
    return {
        "RELATIVE_PATH": rel,
        "SIZE": int(size),
        "LAST_MODIFIED": modified,
        "ETAG": etag,
        "FILE_URL": url,
        "ERROR": error,
    }


def _printable(text: str) -> tuple[str, str | None]:
    """A name that is not valid UTF-8 (undecodable bytes on a POSIX filesystem) is listed
    with those bytes escaped, and refused: it could not be stored or read back faithfully."""
    try:
        text.encode("utf-8")
        return text, None
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace"), "file name is not valid UTF-8"


def _list_local(fs: LocalFileSystem, root: str) -> list[dict[str, Any]]:
    """Walk a local folder without following symbolic links; see the module docstring."""
    real_root = os.path.realpath(root)
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [f for f in filenames if not f.startswith(".")]
        # os.walk reports a link to a folder among dirnames and does not descend into it
        linked_dirs = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in linked_dirs]
        for name in sorted(names + linked_dirs):
            path = os.path.join(dirpath, name)
            rel, error = _printable(os.path.relpath(path, root).replace(os.sep, "/"))
            url, _ = _printable(fs.unstrip_protocol(path))
            try:
                own = os.lstat(path)
            except OSError as exc:  # vanished while listing
                rows.append(_entry(rel, 0, None, url, error=f"unreadable entry: {exc}"))
                continue
            info = own
            if error is None and stat.S_ISLNK(own.st_mode):
                target = os.path.realpath(path)
                if not _inside(target, real_root):
                    error = "symbolic link leads outside the stage; not read"
                elif not os.path.exists(target):
                    error = "broken symbolic link; not read"
                elif os.path.isdir(target):
                    error = "symbolic link to a folder; not followed"
                else:
                    info = os.stat(target)
            if error is None and not stat.S_ISREG(info.st_mode):
                error = "not a regular file (FIFO, socket or device); not read"
            if error is not None:
                info = own  # describe the entry itself; its target is never touched
            rows.append(
                _entry(
                    rel,
                    info.st_size,
                    datetime.fromtimestamp(info.st_mtime, tz=UTC),
                    url,
                    error=error,
                )
            )
    return rows


def _list_remote(fs: Any, root: str) -> list[dict[str, Any]]:
    rows = []
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        rel = path[len(root) :].lstrip("/") if path.startswith(root) else path
        if any(part.startswith(".") and part not in (".", "..") for part in rel.split("/")):
            continue
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        rows.append(
            _entry(
                rel,
                int(info.get("size") or 0),
                _modified(info),
                fs.unstrip_protocol(path),
                etag=str(etag).strip('"') if etag else None,
                error=unsafe_reason(rel),
            )
        )
    return rows


def list_stage(url: str, *, env_var: str | None = None) -> pd.DataFrame:
    """Return one row per file under `url`: relative path, size, last-modified, ETag, file URL
    and ERROR (None, or why the entry must not be read: see the module docstring).

    Hidden files and folders (names starting with '.') are skipped. Raises StageLocationError,
    naming `env_var`, when the location does not exist or is not a folder.
    """
    hint = f" Set {env_var} to the folder or URL that holds the images." if env_var else ""
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise StageLocationError(f"cannot open stage location {url!r}: {exc}.{hint}") from exc
    if not fs.exists(root):
        raise StageLocationError(f"stage location {url!r} does not exist.{hint}")
    if not fs.isdir(root):
        raise StageLocationError(f"stage location {url!r} is a file, not a folder.{hint}")
    root = root.rstrip("/") or "/"
    rows = _list_local(fs, root) if isinstance(fs, LocalFileSystem) else _list_remote(fs, root)
    frame = pd.DataFrame(sorted(rows, key=lambda r: r["RELATIVE_PATH"]), columns=LISTING_COLUMNS)
    frame["SIZE"] = frame["SIZE"].astype("int64")
    frame["LAST_MODIFIED"] = pd.to_datetime(frame["LAST_MODIFIED"], utc=True)
    frame["ERROR"] = frame["ERROR"].astype(object)
    return frame


def stage_file_url(base: str, relative_path: str) -> str | None:
    """The URL of `relative_path` in the stage at `base`, or None when reading it would leave
    the stage: an unsafe path, or (on a local folder) a file that is, or resolves through, a
    symbolic link to outside the stage, or that is not a regular file."""
    if unsafe_reason(relative_path) is not None:
        return None
    url = posixpath.join(base.rstrip("/"), relative_path)
    try:
        fs, root = fsspec.core.url_to_fs(base)
    except (ImportError, ValueError):
        return url  # the reader reports the location's own error
    if isinstance(fs, LocalFileSystem):
        path = os.path.join(root, *relative_path.split("/"))
        if not _inside(os.path.realpath(path), os.path.realpath(root)):
            return None
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                return None
        except OSError:
            return url  # missing: the reader reports "unreadable file"
    return url


def read_bytes(url: str | None) -> bytes:
    """Read one file's bytes from a local path, an fsspec URL or an http(s) URL (a presigned
    URL: read with urllib, timeouts and bounded retries; a refused one raises URLRefusedError);
    None (a path `stage_file_url` refused) raises UnsafePathError without touching anything."""
    if url is None:
        raise UnsafePathError(REFUSED_READ)
    if url.startswith(("https://", "http://")):
        return _read_http(url)
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def class_of(relative_path: str) -> str | None:
    """An image's class is the name of its lowest folder; None for a file at the stage root."""
    parent = posixpath.dirname(relative_path)
    return posixpath.basename(parent) if parent else None
