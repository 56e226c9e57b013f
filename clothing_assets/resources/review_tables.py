"""The review tables of a warehouse: the image embeddings (clothing_embeddings), the results
replaced whole by the review assets (near-duplicates, label issues) and the label decisions.

`ReviewTables` is mixed into `Warehouse`: it declares what each backend implements for these
tables and holds the code they share, written on the backend's `_run` and `_select`."""

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from clothing_assets.ml.duplicates import HASH_COLUMNS
from clothing_assets.resources.identifiers import InvalidIdentifierError
from clothing_assets.stage import class_of

# Columns of an embedding result (`write_embedding_rows`): the file as it was read (SIZE,
# LAST_MODIFIED, ETAG: an embedding of a since-changed file is refused), the SHA-256 of the same
# bytes, and the EMBEDDING (a float32 vector) with the perceptual hashes of the same decode
# (PHASH, PHASH_CENTER: signed 64-bit integers, `ml.phash`), or the ERROR that says why there is
# none.
EMBEDDING_COLUMNS = [
    "RELATIVE_PATH",
    "STAGE",
    "MODEL_VERSION",
    "SIZE",
    "LAST_MODIFIED",
    "ETAG",
    "CONTENT_SHA256",
    "EMBEDDING",
    "ERROR",
    "EMBEDDED_AT",
]
# HASH_COLUMNS are optional in what is written (missing: NULL, and the file is embedded again by
# the next run)
STORED_EMBEDDING_COLUMNS = EMBEDDING_COLUMNS + list(HASH_COLUMNS)
# the catalog an embedding's file is from: 'train' is clothing_train, 'test' clothing_test
EMBEDDING_STAGES = ("train", "test")
MAX_NEAREST = 1000


class EmbeddingError(ValueError):
    """Embedding rows or a query vector the embeddings table cannot take; the message says
    which and why."""


def validate_embedding_stage(stage: object) -> str:
    """Return `stage` if it is one of EMBEDDING_STAGES, else raise EmbeddingError."""
    if stage not in EMBEDDING_STAGES:
        raise EmbeddingError(
            f"unknown embedding stage {stage!r}; expected one of {', '.join(EMBEDDING_STAGES)}"
        )
    return stage  # type: ignore[return-value]


def with_hashes(embeddings: pd.DataFrame) -> pd.DataFrame:
    """`embeddings`' STORED_EMBEDDING_COLUMNS, a missing hash column as NULLs, the hashes as
    nullable Int64. A float hash column is refused (EmbeddingError): float64 holds 53 bits,
    so its hashes are already rounded."""
    frame = embeddings.reset_index(drop=True).copy()
    for column in HASH_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.array([None] * len(frame), dtype="Int64")
            continue
        if pd.api.types.is_float_dtype(frame[column]):
            raise EmbeddingError(
                f"{column} is a float column, which rounds 64-bit hashes: pass integers "
                "(Int64, int64 or Python ints with None)"
            )
        frame[column] = pd.array([None if pd.isna(v) else int(v) for v in frame[column]],
                                 dtype="Int64")  # fmt: skip
    return frame[STORED_EMBEDDING_COLUMNS]


def embedding_dimension_of(rows: Sequence[dict[str, Any]]) -> int | None:
    """The one length of the EMBEDDINGs among `rows` (None when every row is an ERROR);
    EmbeddingError when they differ, or a row is neither an embedding nor an ERROR."""
    lengths = {len(r["EMBEDDING"]) for r in rows if r.get("EMBEDDING") is not None}
    empty = [r["RELATIVE_PATH"] for r in rows if r.get("EMBEDDING") is None and not r.get("ERROR")]
    if empty:
        raise EmbeddingError(f"{len(empty)} embedding rows have neither an EMBEDDING nor an "
                             f"ERROR (the first: {empty[0]!r})")  # fmt: skip
    if len(lengths) > 1 or 0 in lengths:
        raise EmbeddingError(f"embeddings of different lengths in one write: {sorted(lengths)}")
    return lengths.pop() if lengths else None


def query_vector(vector: Any, k: int) -> list[float]:
    """`vector` as a list of finite floats, once `k` is a count of neighbours to return."""
    import numpy as np

    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_NEAREST:
        raise EmbeddingError(f"k must be an integer from 1 to {MAX_NEAREST}, got {k!r}")
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if not array.size or not np.isfinite(array).all():
        raise EmbeddingError("the query vector must be a non-empty vector of finite numbers")
    return array.tolist()


NEAREST_COLUMNS = ["RELATIVE_PATH", "STAGE", "SIMILARITY", "LABEL"]
READ_EMBEDDING_COLUMNS = ["RELATIVE_PATH", "STAGE", "MODEL_VERSION", "CONTENT_SHA256", "EMBEDDING",
                          "PHASH", "PHASH_CENTER"]  # fmt: skip


def with_labels(nearest: pd.DataFrame) -> pd.DataFrame:
    """A nearest-embeddings answer (RELATIVE_PATH, STAGE, SIMILARITY, PREDICTED) with its
    LABEL: the class folder of a train image (its given label), the predicted TYPE of a test
    image; SIMILARITY as float64."""
    frame = nearest.copy()
    given = frame["RELATIVE_PATH"].map(class_of)
    labels = given.where(frame["STAGE"] == "train", frame["PREDICTED"])
    # object, so that a test image without a prediction has None (not a string NaN)
    frame["LABEL"] = pd.Series([None if pd.isna(v) else v for v in labels], dtype=object,
                               index=frame.index)  # fmt: skip
    frame["SIMILARITY"] = frame["SIMILARITY"].astype("float64")
    return frame[NEAREST_COLUMNS].reset_index(drop=True)


# Tables an asset replaces whole with each materialization, and their columns
RESULT_COLUMNS: dict[str, list[str]] = {
    "clothing_near_duplicates": ["PATH_A", "STAGE_A", "PATH_B", "STAGE_B", "SIMILARITY", "KIND"],
    "clothing_label_issues": ["RELATIVE_PATH", "GIVEN", "SUGGESTED", "SCORE", "RANK"],
}
LABEL_DECISIONS = ("fix", "keep")


class ReviewTables(ABC):
    """The embeddings, review results and label decisions of a warehouse."""

    # -- the two primitives each backend implements (see Warehouse) -----------------------

    @abstractmethod
    def _run(self, statements: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Run the named statements in order, in one transaction."""

    @abstractmethod
    def _select(self, name: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """The rows of the named query."""

    # -- embeddings: clothing_embeddings ---------------------------------------------------

    @abstractmethod
    def prepare_embeddings(self, dimension: int) -> bool:
        """Make clothing_embeddings hold vectors of `dimension` floats: create it, or make it
        again (empty) when it holds another length (a champion of another architecture, whose
        embeddings cannot be compared with the stored ones). Returns whether it was made
        again."""

    @abstractmethod
    def embeddings_dimension(self) -> int | None:
        """The vector length of clothing_embeddings; None before it exists."""

    @abstractmethod
    def unembedded_rows(self, stage: str, model_version: str) -> pd.DataFrame:
        """Catalog rows of `stage` ('train' or 'test') that hold no embedding or ERROR of
        `model_version` for the file as it is listed now (RELATIVE_PATH, FILE_URL, SIZE,
        LAST_MODIFIED, ETAG, STAGE)."""

    @abstractmethod
    def write_embeddings(self, embeddings: pd.DataFrame) -> int:
        """Write EMBEDDING_COLUMNS rows (and the HASH_COLUMNS where known) into
        clothing_embeddings in one transaction, each only while its catalog row lists the file
        as it was read; return rows written."""

    def write_embedding_rows(self, rows: Sequence[dict[str, Any]]) -> int:
        """`write_embeddings` of embedding results (dicts with EMBEDDING_COLUMNS among their
        keys; EMBEDDING a float vector, or None with an ERROR); the table is made for their
        length first (`prepare_embeddings`). Rows lacking a column, of an unknown STAGE, of
        mixed lengths, or with neither an EMBEDDING nor an ERROR are refused before anything
        is written. Returns rows written."""
        if not rows:
            return 0
        lacking = [r for r in rows if not all(c in r for c in EMBEDDING_COLUMNS)]
        if lacking:
            missing = sorted(set(EMBEDDING_COLUMNS) - set(lacking[0]))
            raise EmbeddingError(
                f"{len(lacking)} embedding rows lack columns {missing} (the first: "
                f"{lacking[0].get('RELATIVE_PATH')!r})"
            )
        for row in rows:
            validate_embedding_stage(row["STAGE"])
        dimension = embedding_dimension_of(rows)
        if dimension is None:
            dimension = self.embeddings_dimension()
            if dimension is None:
                return 0  # only ERRORs, and no table: a length is known with the first vector
        self.prepare_embeddings(dimension)
        frame = pd.DataFrame(list(rows))
        for column in HASH_COLUMNS:  # from the dicts: a frame makes ints mixed with None floats
            frame[column] = pd.array([r.get(column) for r in rows], dtype="Int64")
        return self.write_embeddings(with_hashes(frame))

    @abstractmethod
    def delete_stale_embeddings(self) -> int:
        """Delete embeddings of files changed or removed since they were read, and of model
        versions whose file was deleted; return rows deleted."""

    @abstractmethod
    def newest_embedded_version(self) -> str | None:
        """The model version of the most recently written embedding, or None."""

    @abstractmethod
    def read_embeddings(
        self, stage: str | None = None, model_version: str | None = None
    ) -> pd.DataFrame:
        """The embeddings (rows without ERROR) of `model_version` (default: the newest embedded
        version), of one stage or both: RELATIVE_PATH, STAGE, MODEL_VERSION, CONTENT_SHA256,
        EMBEDDING (one float32 np.ndarray per row) and PHASH, PHASH_CENTER (nullable Int64),
        ordered by STAGE, RELATIVE_PATH."""

    def embedding_counts(self, model_version: str) -> dict[str, int]:
        """How many embeddings (rows without ERROR) of `model_version` each stage holds,
        counted in the warehouse; {} before anything is embedded."""
        if self.embeddings_dimension() is None:
            return {}
        counts = self._select("select_embedding_counts", {"model_version": model_version})
        return {str(s): int(n) for s, n in zip(counts["STAGE"], counts["EMBEDDINGS"], strict=True)}

    @abstractmethod
    def sample_embeddings(self, model_version: str, limit: int) -> pd.DataFrame:
        """Up to `limit` embeddings of `model_version` (RELATIVE_PATH, STAGE, EMBEDDING as
        float32 np.ndarray), the same ones on every call while the table holds them; only
        those are read."""

    @abstractmethod
    def nearest_embeddings(self, vector: Any, k: int, model_version: str) -> pd.DataFrame:
        """The `k` embeddings of `model_version` most similar (cosine) to `vector`, most
        similar first: RELATIVE_PATH, STAGE, SIMILARITY and LABEL (the class folder for
        train images, the predicted TYPE for test images)."""

    # -- results replaced whole, and the label decisions ---------------------------------

    @abstractmethod
    def _replace_results(self, table: str, frame: pd.DataFrame) -> int:
        """Replace every row of the result table `table` (a RESULT_COLUMNS key) with `frame`'s
        rows in one transaction; return the rows written."""

    def replace_results(self, table: str, frame: pd.DataFrame) -> int:
        """Replace the result table `table` with `frame` (its RESULT_COLUMNS) atomically: a
        failure leaves the previous rows in place."""
        if table not in RESULT_COLUMNS:
            raise InvalidIdentifierError(
                f"unknown result table {table!r}; expected one of {', '.join(RESULT_COLUMNS)}"
            )
        columns = RESULT_COLUMNS[table]
        missing = set(columns) - set(frame.columns)
        if missing:
            raise ValueError(f"{table} rows lack columns {sorted(missing)}")
        return self._replace_results(table, frame[columns].reset_index(drop=True))

    def read_results(self, table: str) -> pd.DataFrame:
        """The rows of the result table `table`, in its order (most similar or most
        suspicious first)."""
        if table not in RESULT_COLUMNS:
            raise InvalidIdentifierError(f"unknown result table {table!r}")
        return self._select(f"select_{table}")

    def record_label_decision(
        self,
        relative_path: str,
        decision: str,
        label: str,
        previous_label: str,
        decided_by: str | None = None,
    ) -> None:
        """Append a person's decision on a training image's label to clothing_label_fixes:
        'fix' sets `label` in place of `previous_label`, 'keep' confirms `label`."""
        if decision not in LABEL_DECISIONS:
            raise ValueError(f"unknown label decision {decision!r}; one of {LABEL_DECISIONS}")
        params = {
            "relative_path": relative_path,
            "decision": decision,
            "label": label,
            "previous_label": previous_label,
            "decided_at": datetime.now(UTC),
            "decided_by": decided_by,
        }
        self._run([("insert_clothing_label_fix", params)])

    def read_label_fixes(self) -> pd.DataFrame:
        """Every label decision, oldest first."""
        return self._select("select_clothing_label_fixes")

    def latest_label_decisions(self) -> pd.DataFrame:
        """The newest decision per path (RELATIVE_PATH, DECISION, LABEL, ...)."""
        fixes = self.read_label_fixes()
        return fixes.drop_duplicates("RELATIVE_PATH", keep="last").reset_index(drop=True)
