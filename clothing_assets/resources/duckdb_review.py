"""DuckDB's side of the review tables: clothing_embeddings (searched in an in-process
matrix), the results replaced whole, through DuckDBWarehouse's connection."""

import re
import threading
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from clothing_assets.resources.duckdb_transactions import transaction
from clothing_assets.resources.embedding_index import EmbeddingIndex, top_k
from clothing_assets.resources.review_tables import (
    EMBEDDING_COLUMNS,
    HASH_COLUMNS,
    NEAREST_COLUMNS,
    READ_EMBEDDING_COLUMNS,
    EmbeddingError,
    query_vector,
    validate_embedding_stage,
    with_hashes,
)
from clothing_assets.sql import load_sql

_ARRAY_TYPE = re.compile(r"^FLOAT\[(\d+)\]$")
DIMENSION_TOKEN = "__DIMENSION__"
_INDEXES: dict[str, EmbeddingIndex] = {}
_INDEXES_LOCK = threading.Lock()


def _index_of(database: str) -> EmbeddingIndex:
    """The search matrices of one DuckDB file, shared by every resource on it in this process."""
    key = database if database == ":memory:" else str(Path(database).expanduser().resolve())
    with _INDEXES_LOCK:
        return _INDEXES.setdefault(key, EmbeddingIndex(key))


def _with_dimension(name: str, dimension: int) -> str:
    """The DuckDB statement `name` for arrays of `dimension` floats (a validated integer)."""
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise ValueError(f"an embedding length must be a positive integer, got {dimension!r}")
    return load_sql("duckdb", name).replace(DIMENSION_TOKEN, str(dimension))


class DuckDBReview:
    """The ReviewTables methods of DuckDBWarehouse, which it is mixed into: they use its
    `_connect` and its `duckdb` resource."""

    @staticmethod
    def _dimension(conn: duckdb.DuckDBPyConnection) -> int | None:
        row = conn.execute(load_sql("duckdb", "select_embeddings_dimension")).fetchone()
        match = _ARRAY_TYPE.match(row[0]) if row else None
        return int(match.group(1)) if match else None

    def embeddings_dimension(self) -> int | None:
        with self._connect() as conn:
            return self._dimension(conn)

    def _add_hash_columns(self, conn: duckdb.DuckDBPyConnection) -> None:
        """Give a clothing_embeddings made before the perceptual hashes their columns (NULL:
        its files are listed to be embedded again), only when it lacks them; nothing on a
        read-only connection, which cannot alter the table."""
        rows = conn.execute(load_sql("duckdb", "select_embeddings_columns")).fetchall()
        if set(HASH_COLUMNS) <= {name for (name,) in rows} or getattr(self, "read_only", False):
            return
        for name in ("add_embeddings_phash", "add_embeddings_phash_center"):
            conn.execute(load_sql("duckdb", name))

    def prepare_embeddings(self, dimension: int) -> bool:
        create = _with_dimension("create_clothing_embeddings", dimension)
        with self._connect() as conn:
            current = self._dimension(conn)
            if current == dimension:
                self._add_hash_columns(conn)
                return False
            with transaction(conn):
                conn.execute(load_sql("duckdb", "drop_clothing_embeddings"))
                conn.execute(create)
        return current is not None

    def unembedded_rows(self, stage: str, model_version: str) -> pd.DataFrame:
        validate_embedding_stage(stage)
        with self._connect() as conn:
            if self._dimension(conn) is None:  # no table yet: every usable row is new
                self._ensure_placeholder(conn)
            self._add_hash_columns(conn)
            return conn.execute(
                load_sql("duckdb", "select_unembedded_rows"),
                {"stage": stage, "model_version": model_version},
            ).df()

    @staticmethod
    def _ensure_placeholder(conn: duckdb.DuckDBPyConnection) -> None:
        """An empty clothing_embeddings of length 1 to query against before the first vector
        is known; `prepare_embeddings` makes it again for the real length."""
        conn.execute(_with_dimension("create_clothing_embeddings", 1))

    def write_embeddings(self, embeddings: pd.DataFrame) -> int:
        missing = set(EMBEDDING_COLUMNS) - set(embeddings.columns)
        if missing:
            raise ValueError(f"embeddings lack columns {sorted(missing)}")
        batch = with_hashes(embeddings)
        batch["EMBEDDING"] = [None if v is None else [float(x) for x in v]
                              for v in batch["EMBEDDING"]]  # fmt: skip
        with self._connect() as conn:
            dimension = self._dimension(conn)
            if dimension is None:
                raise ValueError("clothing_embeddings does not exist: prepare_embeddings first")
            with transaction(conn):
                conn.register("embedded_batch", batch)
                conn.execute(_with_dimension("create_temp_embeddings", dimension))
                conn.unregister("embedded_batch")
                (written,) = conn.execute(
                    load_sql("duckdb", "insert_clothing_embeddings")
                ).fetchone()
                conn.execute(load_sql("duckdb", "drop_temp_embeddings"))
        return int(written)

    def delete_stale_embeddings(self) -> int:
        with self._connect() as conn:
            if self._dimension(conn) is None:
                return 0
            (deleted,) = conn.execute(load_sql("duckdb", "delete_stale_embeddings")).fetchone()
        return int(deleted)

    def newest_embedded_version(self) -> str | None:
        with self._connect() as conn:
            if self._dimension(conn) is None:
                return None
            row = conn.execute(load_sql("duckdb", "select_newest_embedded_version")).fetchone()
        return row[0] if row else None

    def read_embeddings(
        self, stage: str | None = None, model_version: str | None = None
    ) -> pd.DataFrame:
        if stage is not None:
            validate_embedding_stage(stage)
        with self._connect() as conn:
            if self._dimension(conn) is None:  # nothing embedded yet
                return pd.DataFrame(columns=READ_EMBEDDING_COLUMNS)
            self._add_hash_columns(conn)
            if model_version is None:
                row = conn.execute(load_sql("duckdb", "select_newest_embedded_version")).fetchone()
                model_version = row[0] if row else ""
            frame = conn.execute(
                load_sql("duckdb", "select_clothing_embeddings"),
                {"stage": stage, "model_version": model_version},
            ).df()
        frame["EMBEDDING"] = [np.asarray(v, dtype=np.float32) for v in frame["EMBEDDING"]]
        return frame

    def sample_embeddings(self, model_version: str, limit: int) -> pd.DataFrame:
        with self._connect() as conn:
            if self._dimension(conn) is None:
                return pd.DataFrame(columns=["RELATIVE_PATH", "STAGE", "EMBEDDING"])
            frame = conn.execute(
                load_sql("duckdb", "select_embedding_sample"),
                {"model_version": model_version, "limit": int(limit)},
            ).df()
        frame["EMBEDDING"] = [np.asarray(v, dtype=np.float32) for v in frame["EMBEDDING"]]
        return frame

    def nearest_embeddings(self, vector: Any, k: int, model_version: str) -> pd.DataFrame:
        """Searched in an in-process matrix of the version's embeddings (`embedding_index`:
        chosen by measurement over DuckDB's brute-force SQL), read again only when they or
        the test predictions change."""
        values = query_vector(vector, k)
        matrix = _index_of(self.duckdb.database).matrix(
            model_version, self._embeddings_key, self._embedding_matrix
        )
        if not len(matrix.vectors):
            return pd.DataFrame(columns=NEAREST_COLUMNS)
        if matrix.vectors.shape[1] != len(values):
            raise EmbeddingError(
                f"the query vector has {len(values)} values; the stored embeddings have "
                f"{matrix.vectors.shape[1]} (embed the image with the model that embedded the "
                "catalog)"
            )
        return top_k(matrix, np.asarray(values, dtype=np.float32), k)

    def _embeddings_key(self, model_version: str) -> tuple:
        with self._connect() as conn:
            dimension = self._dimension(conn)
            if dimension is None:
                return (None,)
            row = conn.execute(
                load_sql("duckdb", "select_embeddings_key"), {"model_version": model_version}
            ).fetchone()
        return (dimension, *row)

    def _embedding_matrix(self, model_version: str) -> pd.DataFrame:
        with self._connect() as conn:
            if self._dimension(conn) is None:
                return pd.DataFrame(columns=["RELATIVE_PATH", "STAGE", "EMBEDDING", "PREDICTED"])
            frame = conn.execute(
                load_sql("duckdb", "select_embedding_matrix"), {"model_version": model_version}
            ).df()
        frame["PREDICTED"] = [None if pd.isna(v) else str(v) for v in frame["PREDICTED"]]
        return frame

    def _replace_results(self, table: str, frame: pd.DataFrame) -> int:
        with self._connect() as conn, transaction(conn):
            conn.execute(load_sql("duckdb", f"delete_{table}"))
            conn.register("result_batch", frame)
            conn.execute(load_sql("duckdb", f"insert_{table}"))
            conn.unregister("result_batch")
        return len(frame)
