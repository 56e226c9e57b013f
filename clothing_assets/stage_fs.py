"""List and read the files of a stage: a local folder or any fsspec URL (s3://, gs://, ...)."""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime
from typing import Any

import fsspec
import pandas as pd

LISTING_COLUMNS = ["RELATIVE_PATH", "SIZE", "LAST_MODIFIED", "ETAG", "FILE_URL"]


class StageLocationError(RuntimeError):
    """The stage's location does not exist or cannot be listed."""


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


def list_stage(url: str, *, env_var: str | None = None) -> pd.DataFrame:
    """Return one row per file under `url`: relative path, size, last-modified, ETag, file URL.

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
    root = root.rstrip("/")
    rows = []
    for path, info in sorted(fs.find(root, detail=True, withdirs=False).items()):
        rel = posixpath.relpath(path, root)
        if rel.startswith("..") or any(part.startswith(".") for part in rel.split("/")):
            continue
        etag = info.get("ETag") or info.get("etag") or info.get("md5Hash")
        rows.append(
            {
                "RELATIVE_PATH": rel,
                "SIZE": int(info.get("size") or 0),
                "LAST_MODIFIED": _modified(info),
                "ETAG": str(etag).strip('"') if etag else None,
                "FILE_URL": fs.unstrip_protocol(path),
            }
        )
    frame = pd.DataFrame(rows, columns=LISTING_COLUMNS)
    frame["SIZE"] = frame["SIZE"].astype("int64")
    frame["LAST_MODIFIED"] = pd.to_datetime(frame["LAST_MODIFIED"], utc=True)
    return frame


def read_bytes(url: str) -> bytes:
    """Read one file's bytes from a local path or fsspec URL."""
    with fsspec.open(url, "rb") as handle:
        return handle.read()


def class_of(relative_path: str) -> str | None:
    """An image's class is the name of its lowest folder; None for a file at the stage root."""
    parent = posixpath.dirname(relative_path)
    return posixpath.basename(parent) if parent else None
