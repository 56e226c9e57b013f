"""The DuckDB warehouse's nearest-neighbour search: one model version's embeddings as an
in-process float32 matrix, searched by one matrix-vector product.

Chosen by measurement (bench/similar_bench.py, BENCHMARKS.md): on a loaded 2-core machine,
DuckDB's brute-force `array_cosine_similarity` ORDER BY ... LIMIT over 10,000 embeddings of
1,280 floats took 531 ms a query (the connection included), the same search as a NumPy product
over the matrix 20 ms. The matrix is read once per version and read again only when the
table's rows of that version changed (their count or newest EMBEDDED_AT), which a query checks
only after the database file itself changed (its size or modification time, the WAL's too), so
an unchanged warehouse costs no SQL at all.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from clothing_assets.stage import class_of

NEAREST_COLUMNS = ["RELATIVE_PATH", "STAGE", "SIMILARITY", "LABEL"]


@dataclass(frozen=True)
class Matrix:
    """One version's embeddings: row i is the embedding of (stages[i], paths[i])."""

    key: tuple  # the table's (count, newest EMBEDDED_AT) for the version when read
    paths: np.ndarray
    stages: np.ndarray
    predicted: np.ndarray  # a test image's predicted TYPE (None for train images)
    vectors: np.ndarray  # float32, rows of unit length


def file_stamp(database: str) -> tuple:
    """(size, mtime) of the DuckDB file and of its WAL: changes with every committed write."""
    stamp: list = []
    for path in (database, database + ".wal"):
        try:
            stat = os.stat(path)
            stamp.append((stat.st_size, stat.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


class EmbeddingIndex:
    """The cached matrices of one database file, per model version (the newest few)."""

    def __init__(self, database: str, keep: int = 2) -> None:
        self.database, self.keep = database, keep
        self._matrices: dict[str, Matrix] = {}
        self._stamps: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def matrix(
        self,
        version: str,
        key_of: Callable[[str], tuple],
        read: Callable[[str], pd.DataFrame],
    ) -> Matrix:
        """The matrix of `version`, read with `read(version)` (RELATIVE_PATH, STAGE, EMBEDDING
        and PREDICTED, `select_embedding_matrix`) when
            there is none yet or `key_of(version)` changed since it was read; `key_of` is asked
            only when the file changed."""
        stamp = file_stamp(self.database) if self.database != ":memory:" else None
        with self._lock:
            cached = self._matrices.get(version)
            if cached is not None and stamp is not None and self._stamps.get(version) == stamp:
                return cached
        try:
            key = key_of(version)
        except Exception:
            # the warehouse cannot answer now (locked by a run, away): the last matrix read
            # answers meanwhile, and the next query asks again
            if cached is not None:
                return cached
            raise
        if cached is not None and cached.key == key:
            with self._lock:
                self._stamps[version] = stamp
            return cached
        frame = read(version)
        vectors = (
            np.stack(frame["EMBEDDING"].to_list()).astype(np.float32, copy=False)
            if len(frame)
            else np.zeros((0, 1), dtype=np.float32)
        )
        fresh = Matrix(
            key, frame["RELATIVE_PATH"].to_numpy(), frame["STAGE"].to_numpy(),
            frame["PREDICTED"].to_numpy(), vectors,
        )  # fmt: skip
        with self._lock:
            self._matrices[version], self._stamps[version] = fresh, stamp
            while len(self._matrices) > self.keep:
                oldest = next(iter(self._matrices))
                del self._matrices[oldest], self._stamps[oldest]
        return fresh


def top_k(matrix: Matrix, vector: np.ndarray, k: int) -> pd.DataFrame:
    """The `k` rows most similar to `vector` (cosine: the rows are unit length, the query is
    normalised here), most similar first, ties by stage and path: RELATIVE_PATH, STAGE,
    SIMILARITY and LABEL (the class folder of a train image, the prediction of a test image).
    Plain NumPy and one frame at the end: pandas' per-call overhead was most of a query."""
    if not len(matrix.vectors):
        return pd.DataFrame(columns=NEAREST_COLUMNS)
    query = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(query))
    scores = matrix.vectors @ (query / norm if norm else query)
    k = min(k, len(scores))
    chosen = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    found = sorted(
        (-float(scores[i]), str(matrix.stages[i]), str(matrix.paths[i]), matrix.predicted[i])
        for i in chosen
    )
    frame = pd.DataFrame(
        {
            "RELATIVE_PATH": [path for _, _, path, _ in found],
            "STAGE": [stage for _, stage, _, _ in found],
            "SIMILARITY": [-negative for negative, _, _, _ in found],
        }
    )
    # object, so that a test image without a prediction has None (not a string NaN)
    frame["LABEL"] = pd.Series(
        [class_of(path) if stage == "train" else predicted for _, stage, path, predicted in found],
        dtype=object,
    )
    return frame
