"""List the files of a stage: a local folder or any fsspec URL (s3://, gs://, ...).

Path safety. A stage is read only inside its own location. `list_stage` never follows a path
out of it: on a local folder it walks without following symbolic links, and every entry it
cannot vouch for (a symbolic link that leads outside the stage or nowhere, a link to a folder,
a FIFO, socket or device, a name that is not valid UTF-8, a relative path with `..`, an empty
segment or a leading `/`) is still listed, with a one-line reason in its ERROR column and the
size and time of the entry itself, so that it lands in the catalog with that ERROR and is
never opened. `reading.stage_file_url` checks again just before a file is read (the stage can
change after the listing).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import urllib.parse
from datetime import UTC, datetime
from typing import Any

import fsspec
import numpy as np
import pandas as pd
from fsspec.implementations.local import LocalFileSystem

LISTING_COLUMNS = ["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG", "FILE_URL", "ERROR"]

# fsspec protocols whose filesystem comes with one of the project's extras
EXTRA_FOR_PROTOCOL = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


class StageLocationError(RuntimeError):
    """The stage's location does not exist or cannot be listed."""


def redact_url(url: str) -> str:
    """`url` with any user:password@ removed, for logs, metadata and tables."""
    if "@" not in url:  # no userinfo to remove (and no parse: listings call this per file)
        return url
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def open_location(url: str, *, env_var: str | None = None) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a configured location (a trusted setting).

    A protocol whose filesystem is not installed fails with one message naming the extra.
    """
    hint = f" Set {env_var} to the folder or URL that holds the images." if env_var else ""
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as exc:
        protocol = urllib.parse.urlsplit(url).scheme
        extra = EXTRA_FOR_PROTOCOL.get(protocol)
        fix = (
            f'pip install "clothing_assets[{extra}]"'
            if extra
            else f"install the fsspec filesystem for {protocol}://"
        )
        raise StageLocationError(
            f"cannot open {redact_url(url)!r}: the filesystem for {protocol}:// is not "
            f"installed; {fix}.{hint}"
        ) from exc
    except ValueError as exc:
        raise StageLocationError(f"cannot open {redact_url(url)!r}: {exc}.{hint}") from exc


def etag_of(info: dict[str, Any]) -> str | None:
    """The ETag of an object store's file details, bare (S3 quotes it), as the catalog keeps
    it: S3 "ETag", GCS "etag" or "md5Hash"; None where the filesystem gives none."""
    etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
    return str(etag).strip('"') if etag else None


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


def inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or lies under it (both resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _entry(
    rel: str, size: int, modified: datetime | None, url: str, *, etag=None, error=None
) -> dict[str, Any]:
    return {
        "RELATIVE_PATH": rel,
        "SIZE": int(size),
        "LAST_MODIFIED": modified,
        "ETAG": etag,
        "FILE_URL": redact_url(url),  # tables never hold a stage's credentials
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
    # relative paths and URLs are built by joining strings: per file, os.path.relpath and
    # fsspec's unstrip_protocol cost 3x the lstat itself on a 100,000-file stage
    prefix = root if root.endswith(os.sep) else root + os.sep
    root_url = _printable(fs.unstrip_protocol(root))[0].rstrip("/")
    rows = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = "" if dirpath == root else dirpath[len(prefix) :]
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = [f for f in filenames if not f.startswith(".")]
        # os.walk reports a link to a folder among dirnames and does not descend into it
        linked_dirs = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in linked_dirs]
        for name in sorted(names + linked_dirs):
            path = os.path.join(dirpath, name)
            rel, error = _printable(
                (f"{rel_dir}{os.sep}{name}" if rel_dir else name).replace(os.sep, "/")
            )
            url = f"{root_url}/{rel}"
            try:
                own = os.lstat(path)
            except OSError as exc:  # vanished while listing
                rows.append(_entry(rel, 0, None, url, error=f"unreadable entry: {exc}"))
                continue
            info = own
            if error is None and stat.S_ISLNK(own.st_mode):
                target = os.path.realpath(path)
                if not inside(target, real_root):
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
        rows.append(
            _entry(
                rel,
                int(info.get("size") or 0),
                _modified(info),
                fs.unstrip_protocol(path),
                etag=etag_of(info),
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
    fs, root = open_location(url, env_var=env_var)
    shown = redact_url(url)
    if not fs.exists(root):
        raise StageLocationError(f"stage location {shown!r} does not exist.{hint}")
    if not fs.isdir(root):
        raise StageLocationError(f"stage location {shown!r} is a file, not a folder.{hint}")
    root = root.rstrip("/") or "/"
    rows = _list_local(fs, root) if isinstance(fs, LocalFileSystem) else _list_remote(fs, root)
    frame = pd.DataFrame(sorted(rows, key=lambda r: r["RELATIVE_PATH"]), columns=LISTING_COLUMNS)
    frame["SIZE"] = frame["SIZE"].astype("int64")
    frame["LAST_MODIFIED"] = pd.to_datetime(frame["LAST_MODIFIED"], utc=True)
    frame["ERROR"] = frame["ERROR"].astype(object)
    return frame


def class_of(relative_path: str) -> str | None:
    """An image's class is the name of its lowest folder; None for a file at the stage root."""
    parent = posixpath.dirname(relative_path)
    return posixpath.basename(parent) if parent else None


def _file_keys(frame: pd.DataFrame) -> set[tuple[str, int, str, str]]:
    times = pd.to_datetime(frame["LAST_MODIFIED"], utc=True).astype(str)
    etags = frame["ETAG"].fillna("").astype(str)
    sizes = frame["SIZE"].astype("int64")
    return set(zip(frame["RELATIVE_PATH"], sizes, times, etags, strict=True))


def catalog_matches(listing: pd.DataFrame, catalog: pd.DataFrame) -> bool:
    """Whether a catalog table holds exactly the listed files (path, size, last-modified,
    ETag)."""
    return len(listing) == len(catalog) and _file_keys(listing) == _file_keys(catalog)


def listing_digest(listing: pd.DataFrame) -> str:
    """A digest of a listing that changes when a file is added, removed or modified (path,
    size, last-modified or ETag), whatever the rows' order: pandas' fixed-key row hashes,
    sorted, then SHA-256. Vectorised: 0.1 s rather than 2.5 s for 100,000 files."""
    columns = listing[["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG"]].copy()
    # microseconds, a catalog table's precision, so that a listing and the catalog synced from
    # it give one digest whatever unit pandas inferred for either
    columns["LAST_MODIFIED"] = pd.to_datetime(columns["LAST_MODIFIED"], utc=True).dt.as_unit("us")
    columns["ETAG"] = columns["ETAG"].fillna("").astype(str)
    rows = np.sort(pd.util.hash_pandas_object(columns, index=False).to_numpy())
    return hashlib.sha256(rows.tobytes()).hexdigest()
