"""Torch's intra-op threads for one thread of a process.

`torch.set_num_threads` is process-wide, each thread takes the setting once, at its first torch
call, and every thread that then runs a parallel operation keeps an OpenMP team of its own. With
libgomp, once a process holds more OpenMP threads than cores, every team waits for work by
sleeping instead of spinning, and each of the hundreds of small operations of a forward pass
pays a wake-up: on 2 cores, Lite0's forward pass of one image (with its mirror image) took 58 ms
on a worker thread of a process whose main thread had run torch at 2 threads, and 17 ms when the
worker's team was the only one (BENCHMARKS.md, Model server). So a process in which one thread
does the heavy work sets `torch.set_num_threads(1)` before any torch call, and that thread takes
its threads with `use_threads_here`.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_OPENMP_LIBRARIES = ("libgomp", "libiomp5", "libomp")


def use_threads_here(n: int) -> int:
    """Let torch operations on the calling thread use `n` threads, leaving the process's
    setting and every other thread's as they are; the count this thread now has. Without an
    OpenMP runtime to address (not Linux), the process-wide setting is changed instead."""
    torch.get_num_threads()  # torch applies its setting to a thread at its first call: now
    omp = _openmp()
    if omp is None:
        torch.set_num_threads(max(1, n))
    else:
        omp.omp_set_num_threads(max(1, n))
    return torch.get_num_threads()


@functools.cache
def _openmp() -> ctypes.CDLL | None:
    """The OpenMP runtime this process loaded with torch, or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)  # address, perms, offset, dev, inode[, path]
        path = fields[5] if len(fields) == 6 else ""
        if Path(path).name.startswith(_OPENMP_LIBRARIES):
            try:
                return ctypes.CDLL(path)
            except OSError as exc:
                log.warning("OpenMP runtime %s could not be opened: %s", path, exc)
                return None
    return None
