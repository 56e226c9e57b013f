"""The DuckDB warehouse's in-process search matrix: exact cosine ranking, read again only when
the file and then the version's key changed, and the last matrix kept while the warehouse
cannot answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clothing_assets.resources.embedding_index import EmbeddingIndex, top_k


def frame(vectors: dict[tuple[str, str], list[float]], predicted: str | None = None):
    return pd.DataFrame(
        {
            "RELATIVE_PATH": [p for _, p in vectors],
            "STAGE": [s for s, _ in vectors],
            "EMBEDDING": [np.asarray(v, dtype=np.float32) for v in vectors.values()],
            "PREDICTED": [predicted if s == "test" else None for s, _ in vectors],
        }
    )


def test_top_k_ranks_by_cosine_breaks_ties_by_stage_and_path_and_labels(tmp_path):
    index = EmbeddingIndex(str(tmp_path / "none.duckdb"))
    rows = frame({
        ("train", "hat/b.jpg"): [1.0, 0.0], ("train", "hat/a.jpg"): [1.0, 0.0],
        ("test", "x/c.jpg"): [0.6, 0.8], ("train", "shoes/d.jpg"): [0.0, 1.0],
    }, predicted="pants")  # fmt: skip
    matrix = index.matrix("v", lambda v: (1,), lambda v: rows)
    found = top_k(matrix, np.array([2.0, 0.0]), 3)  # the query is normalised here
    assert list(found["RELATIVE_PATH"]) == ["hat/a.jpg", "hat/b.jpg", "x/c.jpg"]
    assert found["SIMILARITY"].tolist() == pytest.approx([1.0, 1.0, 0.6])
    assert list(found["LABEL"]) == ["hat", "hat", "pants"]
    assert len(top_k(matrix, np.array([0.0, 1.0]), 50)) == 4


def test_the_matrix_is_read_again_only_when_the_file_and_its_key_changed(tmp_path):
    database = tmp_path / "w.duckdb"
    database.write_bytes(b"x")
    index, keys, reads = EmbeddingIndex(str(database)), {"v": (1,)}, []

    def read(version):
        reads.append(version)
        return frame({("train", "hat/a.jpg"): [1.0, 0.0]})

    def key_of(version):
        keys.setdefault("asked", 0)
        keys["asked"] += 1
        return keys[version]

    index.matrix("v", key_of, read)
    index.matrix("v", key_of, read)
    assert (len(reads), keys["asked"]) == (1, 1)  # the file did not change: not even the key
    database.write_bytes(b"xy")  # a write elsewhere: the key is asked, the same, no read
    index.matrix("v", key_of, read)
    assert (len(reads), keys["asked"]) == (1, 2)
    keys["v"] = (2,)
    database.write_bytes(b"xyz")
    index.matrix("v", key_of, read)
    assert len(reads) == 2

    def locked(version):
        raise OSError("the file is locked by another process")

    database.write_bytes(b"xyzw")
    assert index.matrix("v", locked, read).key == (2,)  # the last matrix answers meanwhile
    with pytest.raises(OSError):
        EmbeddingIndex(str(database)).matrix("v", locked, read)  # none read yet: the error
