"""What every bench shares: the dataset and CPU-kind arguments, the result line that names the
CPU kind, and timing.

Every bench runs from the repository's root as `python -m bench.<name> [arguments]`.
`--data` is a folder laid out as clothing-dataset-small (`train/<class>/*.jpg`,
`test/<class>/*.jpg`), the shared copy beside the repository by default. `--cpu-kind AVX2`
(or `AVX512`) caps oneDNN and ATen at that instruction set, as `ONEDNN_MAX_CPU_ISA` and
`ATEN_CPU_CAPABILITY` do, to measure an AVX2 machine's code paths on a bigger CPU. The libraries
read the caps once, at their first use, which an import may already make: so the bench starts
itself again with them set, as if they were given on the command line (its Dask workers and
servers inherit them). Result lines go through `tagged`, so each names the kind it ran on.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from clothing_assets.ml.cpu import cpu_kind

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "clothing-dataset-small"
# kind -> the caps that make oneDNN and ATen run no wider than it ("native": no caps)
CPU_CAPS = {
    "native": {},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "AVX512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "ATEN_CPU_CAPABILITY": "avx512"},
}
T = TypeVar("T")


def parser(doc: str | None, *, data: bool = True) -> argparse.ArgumentParser:
    """An argument parser described by the bench's docstring, with `--cpu-kind` and (unless
    the bench makes its own tensors, `data=False`) `--data`."""
    described = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0] or None)
    if data:
        described.add_argument(
            "--data", type=Path, default=DEFAULT_DATA,
            help="a folder with train/<class>/*.jpg and test/<class>/*.jpg (default: %(default)s)",
        )  # fmt: skip
    described.add_argument(
        "--cpu-kind", choices=sorted(CPU_CAPS), default="native",
        help="run no wider than this instruction set (oneDNN and ATen caps); default: native",
    )  # fmt: skip
    return described


def parse(described: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed arguments, after starting this process again under `--cpu-kind`'s caps if
    they are not set yet (the libraries may have read them already)."""
    args = described.parse_args(argv)
    caps = CPU_CAPS[args.cpu_kind]
    if any(os.environ.get(name) != value for name, value in caps.items()):
        os.environ.update(caps)
        sys.stdout.flush()
        os.execv(sys.executable, sys.orig_argv)
    return args


def tagged(line: str) -> str:
    """`line` prefixed with this process's CPU kind: every result line names the kind it ran
    on (`AVX2 | train_bench: ...`)."""
    return f"{cpu_kind()} | {line}"


def torch_line() -> str:
    """torch's version, its threads and the instruction set ATen's kernels run (what
    `--cpu-kind` caps)."""
    import torch

    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"ATen {torch.backends.cpu.get_cpu_capability()}"
    )


def jpegs(folder: Path, limit: int | None = None) -> list[Path]:
    """The sorted `*.jpg` files under `folder` (the first `limit`); exits naming the folder
    when there are none."""
    files = sorted(folder.rglob("*.jpg"))[:limit]
    if not files:
        raise SystemExit(f"no .jpg files under {folder}: give --data <a clothing-dataset folder>")
    return files


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()`'s result and the wall-clock seconds it took."""
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def median_seconds(fn: Callable[[], object], repeats: int, *, warmup: int = 0) -> float:
    """The median wall-clock seconds of `repeats` calls of `fn`, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn)[1] for _ in range(repeats))
