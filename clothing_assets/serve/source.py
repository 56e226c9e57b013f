"""Where the served model comes from: anything with `current()`, polled by the server."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from clothing_assets.resources.model_store import ModelStoreError, file_version
from clothing_assets.settings import is_set, setting

if TYPE_CHECKING:
    from clothing_assets.resources.model_store import ModelStoreResource
    from clothing_assets.resources.warehouse import Warehouse


@runtime_checkable
class ModelSource(Protocol):
    """The model to serve right now. The server only ever calls `current()`, from a thread,
    every CLOTHING_SERVE_POLL_SECONDS; a registry-backed source names its champion here."""

    def current(self) -> tuple[str, bytes] | None:
        """(version, the model file's bytes), or None when there is no model yet."""
        ...


class FileModelSource:
    """A model file on local disk (CLOTHING_SERVE_MODEL_FILE, `--model`); its version is the
    first 16 hex digits of its SHA-256, as the model store names it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._seen: tuple[tuple[int, int, int], str, bytes] | None = None

    def current(self) -> tuple[str, bytes] | None:
        """The file's version and bytes, or None while it does not exist.

        The file is only read again when its inode, size or mtime changed, so that polling
        every few seconds does not hash a large model each time. Writers replace it
        atomically (write elsewhere, then rename), so a changed stat means a whole new file.
        """
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._seen = None
            return None
        key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._seen is None or self._seen[0] != key:
            data = self.path.read_bytes()
            self._seen = (key, file_version(data), data)
        return self._seen[1], self._seen[2]

    def __repr__(self) -> str:
        return f"FileModelSource({str(self.path)!r})"


class RejectedModel(RuntimeError):
    """The champion's stored file failed its check and has not changed since."""


class RegistryReader:
    """The registry as the server reads it: the champion's row, through the warehouse's own
    query, and its stored file, checked by the model store against the SHA-256 the registry
    recorded. The warehouse and the store are built once; each call opens (and closes) its
    own connection, so a reader holds nothing between polls."""

    def __init__(self, warehouse: Warehouse, store: ModelStoreResource) -> None:
        self.warehouse, self.store = warehouse, store

    def champion(self) -> dict[str, Any] | None:
        """The champion's registry row, or None before the first promotion."""
        return self.warehouse.champion()

    def stat(self, version: str) -> tuple[Any, ...] | None:
        """(size, modification stamp) of the stored file of `version`; None when missing."""
        return self.store.stat(version)

    def read(self, champion: dict[str, Any]) -> bytes:
        """The stored file of the registry row `champion`; ModelStoreError when it is missing
        or does not match its recorded hash."""
        return self.store.get(champion["VERSION"], champion["SHA256"])


def environment_reader() -> RegistryReader:
    """A reader over this environment's warehouse and model store (`environment`)."""
    from clothing_assets.environment import registry_parts

    return RegistryReader(*registry_parts())


class RegistryModelSource:
    """The model registry's champion: asked of the warehouse at each poll, its file read from
    the model store (checked against its hash) only when the champion changes. A file that
    fails the check is remembered by (version, size, modification stamp) and not read again
    until one of them changes: re-reading and re-hashing a large model every few seconds
    would only fail again. The reader is made once, at the first poll that can make it
    (default: `environment_reader`)."""

    def __init__(self, reader: RegistryReader | None = None) -> None:
        self._reader = reader
        self._seen: tuple[str, bytes] | None = None
        self._rejected: tuple[tuple[Any, ...], str] | None = None

    def current(self) -> tuple[str, bytes] | None:
        if self._reader is None:
            self._reader = environment_reader()
        champion = self._reader.champion()
        if champion is None:
            return None
        version = champion["VERSION"]
        if self._seen is not None and self._seen[0] == version:
            return self._seen
        key = (version, self._reader.stat(version))
        if self._rejected is not None and self._rejected[0] == key:
            raise RejectedModel(self._rejected[1])
        try:
            self._seen = (version, self._reader.read(champion))
        except ModelStoreError as exc:
            self._rejected = (key, str(exc))
            raise RejectedModel(str(exc)) from None
        return self._seen

    def __repr__(self) -> str:
        return "RegistryModelSource()"


def default_source() -> ModelSource:
    """CLOTHING_SERVE_MODEL_FILE when it is set, else the registry's champion."""
    if is_set("CLOTHING_SERVE_MODEL_FILE"):
        return FileModelSource(setting("CLOTHING_SERVE_MODEL_FILE"))
    return RegistryModelSource()


__all__ = [
    "FileModelSource",
    "ModelSource",
    "RegistryModelSource",
    "RegistryReader",
    "RejectedModel",
    "default_source",
]
