"""Files that survive a crash or a full disk, and one training run at a time per cache folder.

`write_atomic` writes a temporary file beside the target, fsyncs it, renames it over the
target and fsyncs the folder: after a power cut the path holds the old or the new file, never
a torn one; on any error the temporary file is removed and the old file is left as it was.
`training_lock` is an exclusive `fcntl.flock` on `<folder>/training.lock` held while a run
trains, so two runs never share (or delete) each other's checkpoint or decode cache.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

LOCK_FILE = "training.lock"
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(OSError):
    """A file could not be written because its disk (or quota) is full; the message names it."""


class TrainingLockTimeout(TimeoutError):
    """Another training run kept the cache folder's lock past the timeout."""


class _Recording:
    """A file wrapper that keeps the first write error: torch.save turns an OSError raised
    by `write` into an opaque RuntimeError ("unexpected pos ..."), this keeps the real one."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw, self.error = raw, None

    def write(self, data: bytes) -> int:
        try:
            return self.raw.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.raw.flush()


def fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Replace `path` with what `write(file)` writes: temp file, flush, fsync, rename, fsync of
    the folder. On any error the temp file is removed and `path` is untouched; a full disk
    raises DiskFullError naming `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as raw:
            out = _Recording(raw)
            try:
                write(out)
            except Exception as exc:
                if out.error is not None and out.error is not exc:
                    raise out.error from exc
                raise
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            raise DiskFullError(
                exc.errno,
                f"the disk is full: could not write {path} ({exc.strerror}); "
                "the previous file, if any, is unchanged",
            ) from exc
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """`write_atomic` for bytes in hand."""
    write_atomic(path, lambda out: out.write(data))


def checkpoint_file(folder: Path, fingerprint: str) -> Path:
    """The checkpoint of the training job `fingerprint`: each job has its own file."""
    return Path(folder) / f"checkpoint-{fingerprint[:16]}.pt"


def _owner() -> str:
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"pid {os.getpid()} on {socket.gethostname()} since {started}"


@contextlib.contextmanager
def training_lock(folder: Path, *, timeout_s: float | None) -> Iterator[Path]:
    """Hold the exclusive training lock of `folder` (a cache folder), waiting up to `timeout_s`
    (None: as long as it takes) for another run to release it. The deployment's timeout is
    CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS, which the caller reads and passes in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_FILE
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
                    raise TrainingLockTimeout(
                        f"another training run holds {lock_path} ({holder}); waited "
                        f"{timeout_s:g}s. Let it finish, or raise "
                        "CLOTHING_TRAINING_LOCK_TIMEOUT_SECONDS"
                    ) from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner().encode(), 0)
        try:
            yield lock_path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
