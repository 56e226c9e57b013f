"""Snowflake's side of the review tables: clothing_embeddings (a VECTOR column searched with
VECTOR_COSINE_SIMILARITY) and the results replaced whole, through SnowflakeWarehouse's
connection and its write_pandas batches."""

from __future__ import annotations

import json
import re
from typing import Any

import pandas as pd

from clothing_assets.resources.review_tables import (
    EMBEDDING_COLUMNS,
    HASH_COLUMNS,
    NEAREST_COLUMNS,
    READ_EMBEDDING_COLUMNS,
    EmbeddingError,
    query_vector,
    validate_embedding_stage,
    with_hashes,
    with_labels,
)
from clothing_assets.resources.snowflake_sql import (
    counts_of,
    frame_of,
    render,
    render_dimension,
)

_VECTOR_TYPE = re.compile(r"^VECTOR\(FLOAT,\s*(\d+)\)$", re.IGNORECASE)


class SnowflakeReview:
    """The ReviewTables methods of SnowflakeWarehouse, which it is mixed into: they use its
    `_connect`, `_run` and `_apply_batch`."""

    @staticmethod
    def _described(cursor: Any) -> dict[str, str] | None:
        """clothing_embeddings' column types by name, from DESCRIBE TABLE; None while the
        table does not exist."""
        from snowflake.connector.errors import ProgrammingError

        try:
            cursor.execute(render("describe_clothing_embeddings"))
        except ProgrammingError:
            return None  # "does not exist or not authorized": made at the first write
        columns = [d[0].lower() for d in cursor.description]
        records = [dict(zip(columns, row, strict=False)) for row in cursor.fetchall()]
        return {str(r.get("name", "")).upper(): str(r.get("type", "")).strip() for r in records}

    @staticmethod
    def _dimension_of(described: dict[str, str] | None) -> int | None:
        """EMBEDDING's length in a `_described` table; None without the table."""
        match = _VECTOR_TYPE.match(described.get("EMBEDDING", "")) if described else None
        return int(match.group(1)) if match else None

    @classmethod
    def _dimension(cls, cursor: Any) -> int | None:
        """EMBEDDING's length; None while the table does not exist."""
        return cls._dimension_of(cls._described(cursor))

    def embeddings_dimension(self) -> int | None:
        with self._connect() as conn:
            return self._dimension(conn.cursor())

    @classmethod
    def _add_hash_columns(cls, cursor: Any, described: dict[str, str] | None = None) -> None:
        """Give a clothing_embeddings made before the perceptual hashes their columns (NULL:
        its files are listed to be embedded again), only when it lacks them: DDL commits the
        session's open transaction in Snowflake. `described`: the table's `_described`
        columns when the caller has them (one DESCRIBE, not two)."""
        described = cls._described(cursor) if described is None else described
        if described is not None and not set(HASH_COLUMNS) <= set(described):
            for name in ("add_embeddings_phash", "add_embeddings_phash_center"):
                cursor.execute(render(name))

    def prepare_embeddings(self, dimension: int) -> bool:
        create = render_dimension("create_clothing_embeddings", dimension)
        with self._connect() as conn:
            cursor = conn.cursor()
            described = self._described(cursor)
            current = self._dimension_of(described)
            if current == dimension:
                self._add_hash_columns(cursor, described)
                return False
            cursor.execute(render("drop_clothing_embeddings"))
            cursor.execute(create)
        return current is not None

    def _ready_cursor(self, conn: Any) -> tuple[Any, int | None]:
        """A cursor, and the table's length; an empty table of length 1 is made when there is
        none yet, to query against (`prepare_embeddings` makes it again for the real one)."""
        cursor = conn.cursor()
        described = self._described(cursor)
        dimension = self._dimension_of(described)
        if dimension is None:
            cursor.execute(render_dimension("create_clothing_embeddings", 1))
        else:
            self._add_hash_columns(cursor, described)
        return cursor, dimension

    def unembedded_rows(self, stage: str, model_version: str) -> pd.DataFrame:
        validate_embedding_stage(stage)
        with self._connect() as conn:
            cursor, _ = self._ready_cursor(conn)
            cursor.execute(
                render("select_unembedded_rows"), {"stage": stage, "model_version": model_version}
            )
            return frame_of(cursor)

    def write_embeddings(self, embeddings: pd.DataFrame) -> int:
        missing = set(EMBEDDING_COLUMNS) - set(embeddings.columns)
        if missing:
            raise ValueError(f"embeddings lack columns {sorted(missing)}")
        if embeddings.empty:
            return 0
        dimension = self.embeddings_dimension()
        if dimension is None:
            raise ValueError("clothing_embeddings does not exist: prepare_embeddings first")
        frame = with_hashes(embeddings)
        frame["SIZE"] = frame["SIZE"].astype("int64")
        for column in ("LAST_MODIFIED", "EMBEDDED_AT"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        frame["EMBEDDING"] = [None if v is None else json.dumps([float(x) for x in v])
                              for v in frame["EMBEDDING"]]  # fmt: skip
        for column in ("RELATIVE_PATH", "STAGE", "MODEL_VERSION", "ETAG", "CONTENT_SHA256",
                       "EMBEDDING", "ERROR"):  # fmt: skip
            frame[column] = frame[column].astype("string")
        return self._apply_batch(
            "create_temp_embeddings", "merge_clothing_embeddings", frame,
            apply_text=render_dimension("merge_clothing_embeddings", dimension),
        )  # fmt: skip

    def delete_stale_embeddings(self) -> int:
        with self._connect() as conn:
            cursor = conn.cursor()
            if self._dimension(cursor) is None:
                return 0
            cursor.execute(render("delete_stale_embeddings"))
            return counts_of(cursor).get("deleted", 0)

    def newest_embedded_version(self) -> str | None:
        with self._connect() as conn:
            cursor = conn.cursor()
            if self._dimension(cursor) is None:
                return None
            cursor.execute(render("select_newest_embedded_version"))
            row = cursor.fetchone()
        return row[0] if row else None

    def read_embeddings(
        self, stage: str | None = None, model_version: str | None = None
    ) -> pd.DataFrame:
        import numpy as np

        if stage is not None:
            validate_embedding_stage(stage)
        with self._connect() as conn:
            cursor = conn.cursor()
            described = self._described(cursor)
            if self._dimension_of(described) is None:  # nothing embedded yet
                return pd.DataFrame(columns=READ_EMBEDDING_COLUMNS)
            self._add_hash_columns(cursor, described)
            if model_version is None:
                cursor.execute(render("select_newest_embedded_version"))
                row = cursor.fetchone()
                model_version = row[0] if row else ""
            cursor.execute(
                render("select_clothing_embeddings"),
                {"stage": stage, "model_version": model_version},
            )
            frame = frame_of(cursor)
        frame["EMBEDDING"] = [np.asarray(_vector(v), dtype=np.float32) for v in frame["EMBEDDING"]]
        for column in HASH_COLUMNS:  # NUMBER(19, 0) arrives as int or None: exact in Int64
            frame[column] = pd.array([None if v is None else int(v) for v in frame[column]],
                                     dtype="Int64")  # fmt: skip
        return frame

    def sample_embeddings(self, model_version: str, limit: int) -> pd.DataFrame:
        import numpy as np

        with self._connect() as conn:
            cursor = conn.cursor()
            if self._dimension(cursor) is None:
                return pd.DataFrame(columns=["RELATIVE_PATH", "STAGE", "EMBEDDING"])
            cursor.execute(render("select_embedding_sample"),
                           {"model_version": model_version, "limit": int(limit)})  # fmt: skip
            frame = frame_of(cursor)
        frame["EMBEDDING"] = [np.asarray(_vector(v), dtype=np.float32) for v in frame["EMBEDDING"]]
        return frame

    def nearest_embeddings(self, vector: Any, k: int, model_version: str) -> pd.DataFrame:
        values = query_vector(vector, k)
        with self._connect() as conn:
            cursor = conn.cursor()
            dimension = self._dimension(cursor)
            if dimension is None:
                return pd.DataFrame(columns=NEAREST_COLUMNS)
            if dimension != len(values):
                raise EmbeddingError(
                    f"the query vector has {len(values)} values; the stored embeddings have "
                    f"{dimension} (embed the image with the model that embedded the catalog)"
                )
            cursor.execute(
                render_dimension("select_nearest_embeddings", dimension),
                {"vector": json.dumps(values), "k": k, "model_version": model_version},
            )
            frame = frame_of(cursor)
        return with_labels(frame)

    def _replace_results(self, table: str, frame: pd.DataFrame) -> int:
        frame = frame.copy()
        for column in frame.columns:
            if column in ("SIMILARITY", "SCORE"):
                frame[column] = frame[column].astype("float64")
            elif column == "RANK":
                frame[column] = frame[column].astype("int64")
            else:
                frame[column] = frame[column].astype("string")
        if frame.empty:
            self._run([(f"delete_{table}", {})])
            return 0
        self._apply_batch(
            f"create_temp_{table}", f"insert_{table}", frame, first=[f"delete_{table}"]
        )
        return len(frame)


def _vector(value: Any) -> list[float]:
    """A VECTOR as the connector returns it (a list, or JSON text) as a list of floats."""
    return json.loads(value) if isinstance(value, str) else list(value)
