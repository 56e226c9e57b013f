"""The model store: every trained model version, stored once under its content hash, in a
folder or at an fsspec URL (`s3://...` with the `s3` extra); plus a local scratch folder for
checkpoints, the decode cache and plots."""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
from pathlib import Path
from typing import Any

import dagster as dg
from fsspec.implementations.local import LocalFileSystem
from pydantic import Field

from clothing_assets.stage import open_location, redact_url

CHECKPOINT_FILE = "checkpoint.pt"
VERSIONS_FOLDER = "versions"


class ModelStoreError(RuntimeError):
    """A stored model is missing or does not match its version; the message says what to do."""


def file_version(data: bytes) -> str:
    """The model version: the first 16 hex digits of the file's SHA-256."""
    return hashlib.sha256(data).hexdigest()[:16]


def _write_local_atomic(path: str, data: bytes) -> None:
    """Write `data` to `path` through a temporary file: fsynced, renamed, folder fsynced; on
    any error (a full disk) the temporary file is removed and nothing at `path` changes."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStoreResource(dg.ConfigurableResource):
    """Where model versions live (`directory`) and where training keeps its local scratch."""

    directory: str = Field(
        default="models",
        description="The model store: a folder or fsspec URL (CLOTHING_MODELS_DIR).",
    )
    cache_directory: str = Field(
        default="models/cache",
        description="Local scratch: checkpoints, decode cache, plots (CLOTHING_CACHE_DIR).",
    )

    def _fs(self) -> tuple[Any, str]:
        fs, root = open_location(self.directory, env_var="CLOTHING_MODELS_DIR")
        return fs, root.rstrip("/") or "/"

    def describe(self) -> str:
        return redact_url(self.directory)

    def _path(self, version: str) -> tuple[Any, str]:
        if not version.isalnum():
            raise ModelStoreError(f"invalid model version {version!r}")
        fs, root = self._fs()
        return fs, posixpath.join(root, VERSIONS_FOLDER, f"{version}.pt")

    def uri(self, version: str) -> str:
        """Where `version` is stored, without credentials."""
        fs, path = self._path(version)
        return redact_url(fs.unstrip_protocol(path))

    def exists(self, version: str) -> bool:
        fs, path = self._path(version)
        return bool(fs.exists(path))

    def stat(self, version: str) -> tuple[Any, ...] | None:
        """(size, modification stamp) of the stored file of `version`, None when it is
        missing: what tells a changed file from the same one without reading it."""
        fs, path = self._path(version)
        try:
            info = fs.info(path)
        except FileNotFoundError:
            return None
        stamps = ("mtime", "LastModified", "updated", "ETag")  # local, S3, GCS, others
        stamp = next((info[k] for k in stamps if k in info), None)
        return info.get("size"), str(stamp)

    def put(self, data: bytes) -> str:
        """Store `data` under its version (never overwriting a stored one) and return it."""
        version = file_version(data)
        fs, path = self._path(version)
        if fs.exists(path):
            self.get(version, hashlib.sha256(data).hexdigest())  # same bytes, or it says so
            return version
        if isinstance(fs, LocalFileSystem):
            _write_local_atomic(path, data)
        else:
            fs.pipe_file(path, data)  # one object PUT: readers see all of it or nothing
        return version

    def get(self, version: str, sha256: str | None = None) -> bytes:
        """The bytes of `version`, checked against its version (and full SHA-256 when given)."""
        fs, path = self._path(version)
        try:
            data = fs.cat_file(path)
        except FileNotFoundError:
            raise ModelStoreError(
                f"model {version} is not in the model store {self.describe()} (deleted or "
                "never stored): see `clothing-assets models list` and promote a stored version"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if digest[:16] != version or (sha256 and digest != sha256):
            raise ModelStoreError(
                f"the stored file of model {version} ({self.uri(version)}) does not match its "
                f"version (its SHA-256 is {digest[:16]}...): it was changed after it was stored "
                "and is refused. Promote another version (`clothing-assets models list`) or "
                "retrain."
            )
        return data

    def delete(self, version: str) -> None:
        fs, path = self._path(version)
        with contextlib.suppress(FileNotFoundError):
            fs.rm_file(path)

    @property
    def cache_root(self) -> Path:
        path = Path(self.cache_directory).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def checkpoint_path(self) -> Path:
        return self.cache_root / CHECKPOINT_FILE

    @property
    def plots_dir(self) -> Path:
        path = self.cache_root / "plots"
        path.mkdir(parents=True, exist_ok=True)
        return path
