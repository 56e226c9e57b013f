"""Where the served model comes from: anything with `current()`, polled by the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from clothing_assets.resources.model_store import file_version
from clothing_assets.settings import is_set, setting


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


class RegistryModelSource:
    """The model registry's champion: asked of the warehouse at each poll, its file read from
    the model store (checked against its hash) only when the champion changes. A file that
    fails the check is remembered by (version, size, modification stamp) and not read again
    until one of them changes: re-reading and re-hashing a large model every few seconds
    would only fail again."""

    def __init__(self) -> None:
        self._seen: tuple[str, bytes] | None = None
        self._rejected: tuple[tuple[Any, ...], str] | None = None

    def current(self) -> tuple[str, bytes] | None:
        from clothing_assets.environment import open_registry
        from clothing_assets.resources.model_registry import RegistryError

        with open_registry() as registry:
            champion = registry.champion()
            if champion is None:
                return None
            version = champion["VERSION"]
            if self._seen is not None and self._seen[0] == version:
                return self._seen
            key = (version, registry.store.stat(version))
            if self._rejected is not None and self._rejected[0] == key:
                raise RejectedModel(self._rejected[1])
            try:
                self._seen = (version, registry.load(version))
            except RegistryError as exc:
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
    "RejectedModel",
    "default_source",
]
