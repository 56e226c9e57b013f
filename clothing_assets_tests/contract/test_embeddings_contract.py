"""clothing_embeddings behind the warehouse interface: written in chunks only for files as they
are cataloged, read back as float32 vectors, searched by cosine similarity, on DuckDB and on
SnowflakeWarehouse over fakesnow.

fakesnow cannot parse Snowflake's VECTOR type ("Expected a constant as type modifier"), so every
test that creates or reads clothing_embeddings skips on fakesnow with that reason; the Snowflake
statements are parsed with sqlglot in test_snowflake_warehouse.py and run for real only in the
live test (`-m snowflake`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pytest

from clothing_assets.resources.warehouse import EmbeddingError, Warehouse
from clothing_assets_tests.contract.test_warehouse_contract import (  # noqa: F401 - fixtures
    predictions,
    stage,
    warehouse,
)
from clothing_assets_tests.support import write_image

VECTOR_SKIP = "fakesnow cannot parse Snowflake's VECTOR type (Expected a constant as type modifier)"


@pytest.fixture
def cataloged(warehouse: Warehouse, stage):  # noqa: F811 - the contract's fixtures
    """Both catalogs synced from the same stage folder; on fakesnow, skipped (VECTOR)."""
    if type(warehouse).__name__ == "FakesnowWarehouse":
        pytest.skip(VECTOR_SKIP)
    warehouse.sync_catalog("clothing_train", "s")
    warehouse.sync_catalog("clothing_test", "s")
    return warehouse


def path_hash(path: str, salt: str = "") -> int:
    """A signed 64-bit stand-in for a perceptual hash, fixed per path."""
    digest = hashlib.sha256(f"{salt}{path}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def rows_for(
    w: Warehouse, stage_name: str, version: str, vectors: dict[str, list[float]]
) -> list[dict]:
    """Embedding results of `stage_name`'s unembedded catalog rows with the given vectors (by
    path; other paths get a unit vector along the first axis) and hashes (`path_hash`)."""
    todo = w.unembedded_rows(stage_name, version)
    dimension = len(next(iter(vectors.values())))
    default = np.eye(dimension, dtype=np.float32)[0]
    return [
        {
            "RELATIVE_PATH": r.RELATIVE_PATH,
            "STAGE": stage_name,
            "MODEL_VERSION": version,
            "SIZE": r.SIZE,
            "LAST_MODIFIED": r.LAST_MODIFIED,
            "ETAG": r.ETAG,
            "CONTENT_SHA256": f"sha-{r.RELATIVE_PATH}",
            "EMBEDDING": np.asarray(vectors.get(r.RELATIVE_PATH, default), dtype=np.float32),
            "ERROR": None,
            "EMBEDDED_AT": datetime.now(UTC),
            "PHASH": path_hash(r.RELATIVE_PATH),
            "PHASH_CENTER": path_hash(r.RELATIVE_PATH, "centre"),
        }  # fmt: skip
        for r in todo.itertuples()
    ]


def test_embeddings_round_trip_and_only_new_rows_are_left(cataloged):
    w = cataloged
    assert w.read_embeddings().empty
    todo = w.unembedded_rows("train", "v1")
    assert sorted(todo["RELATIVE_PATH"]) == [
        "hat/hat_0.jpg", "hat/hat_1.jpg", "shoes/shoes_0.jpg", "shoes/shoes_1.jpg"
    ]  # fmt: skip
    rows = rows_for(w, "train", "v1", {"hat/hat_0.jpg": [0.6, 0.8, 0.0]})
    rows[-1] = {**rows[-1], "EMBEDDING": None, "ERROR": "cannot decode"}
    assert w.write_embedding_rows(rows) == 4
    assert w.unembedded_rows("train", "v1").empty  # an ERROR row is done too
    assert len(w.unembedded_rows("test", "v1")) == 4  # the other catalog is its own stage
    assert len(w.unembedded_rows("train", "v2")) == 4  # a new champion embeds everything
    read = w.read_embeddings(stage="train")
    assert list(read.columns) == [
        "RELATIVE_PATH", "STAGE", "MODEL_VERSION", "CONTENT_SHA256", "EMBEDDING", "PHASH",
        "PHASH_CENTER",
    ]  # fmt: skip
    assert len(read) == 3  # the ERROR row is not an embedding
    first = read.set_index("RELATIVE_PATH").loc["hat/hat_0.jpg"]
    assert first["EMBEDDING"].dtype == np.float32
    np.testing.assert_allclose(first["EMBEDDING"], [0.6, 0.8, 0.0], rtol=1e-6)
    assert first["CONTENT_SHA256"] == "sha-hat/hat_0.jpg"
    assert w.read_embeddings(stage="test").empty


def test_default_version_is_the_newest_embedded(cataloged):
    w = cataloged
    w.write_embedding_rows(rows_for(w, "train", "old", {"x": [1.0, 0.0]}))
    w.write_embedding_rows(rows_for(w, "test", "new", {"x": [0.0, 1.0]}))
    assert w.newest_embedded_version() == "new"
    assert set(w.read_embeddings()["MODEL_VERSION"]) == {"new"}
    assert set(w.read_embeddings(model_version="old")["STAGE"]) == {"train"}


def test_nearest_embeddings_rank_by_cosine_with_labels(cataloged):
    w = cataloged
    w.write_embedding_rows(rows_for(w, "train", "v1", {
        "hat/hat_0.jpg": [1.0, 0.0, 0.0], "hat/hat_1.jpg": [0.8, 0.6, 0.0],
        "shoes/shoes_0.jpg": [0.0, 1.0, 0.0], "shoes/shoes_1.jpg": [0.0, 0.0, 1.0],
    }))  # fmt: skip
    test_rows = rows_for(w, "test", "v1", {"hat/hat_1.jpg": [0.6, 0.8, 0.0]})
    w.write_embedding_rows([r for r in test_rows if r["RELATIVE_PATH"] == "hat/hat_1.jpg"])
    found = w.nearest_embeddings([0.7, 0.7, 0.0], 3, "v1")
    assert list(found.columns) == ["RELATIVE_PATH", "STAGE", "SIMILARITY", "LABEL"]
    assert list(zip(found["RELATIVE_PATH"], found["STAGE"], strict=True)) == [
        ("hat/hat_1.jpg", "test"), ("hat/hat_1.jpg", "train"), ("hat/hat_0.jpg", "train")
    ]  # fmt: skip
    assert found["SIMILARITY"].is_monotonic_decreasing
    assert found["SIMILARITY"].iloc[0] == pytest.approx((0.42 + 0.56) / (0.98995 * 1.0), 1e-4)
    # the train label is the class folder; a test image's is its prediction (none yet)
    assert list(found["LABEL"]) == [None, "hat", "hat"]
    assert w.nearest_embeddings([1, 0, 0], 50, "other").empty


def test_bad_queries_and_rows_are_refused_before_anything_is_written(cataloged):
    w = cataloged
    rows = rows_for(w, "train", "v1", {"x": [1.0, 0.0]})
    w.write_embedding_rows(rows[:1])
    for k in (0, -1, 1001, 2.5, True):
        with pytest.raises(EmbeddingError, match="k must be"):
            w.nearest_embeddings([1.0, 0.0], k, "v1")
    with pytest.raises(EmbeddingError, match="3 values; the stored embeddings have 2"):
        w.nearest_embeddings([1.0, 0.0, 0.0], 5, "v1")
    with pytest.raises(EmbeddingError, match="finite"):
        w.nearest_embeddings([float("nan"), 0.0], 5, "v1")
    mixed = [rows[1], {**rows[2], "EMBEDDING": np.ones(3, dtype=np.float32)}]
    with pytest.raises(EmbeddingError, match="different lengths"):
        w.write_embedding_rows(mixed)
    with pytest.raises(EmbeddingError, match="neither an EMBEDDING nor an ERROR"):
        w.write_embedding_rows([{**rows[1], "EMBEDDING": None}])
    with pytest.raises(EmbeddingError, match="lack columns"):
        w.write_embedding_rows([{k: v for k, v in rows[1].items() if k != "CONTENT_SHA256"}])
    with pytest.raises(EmbeddingError, match="unknown embedding stage"):
        w.write_embedding_rows([{**rows[1], "STAGE": "clothing_train"}])
    assert len(w.read_embeddings()) == 1


def test_embeddings_of_changed_files_are_refused_and_deleted(cataloged, stage):  # noqa: F811
    w = cataloged
    rows = rows_for(w, "train", "v1", {"x": [1.0, 0.0]})
    w.write_embedding_rows(rows[:2])
    # the first file is rewritten after it was read: its embedding is stale
    write_image(stage / rows[0]["RELATIVE_PATH"], (1, 2, 3), seed=99, size=60)
    w.refresh_stage("s")
    w.sync_catalog("clothing_train", "s")
    assert w.write_embedding_rows(rows[:1]) == 0  # written against the old listing: refused
    assert w.delete_stale_embeddings() == 1
    assert list(w.read_embeddings()["RELATIVE_PATH"]) == [rows[1]["RELATIVE_PATH"]]
    assert rows[0]["RELATIVE_PATH"] in set(w.unembedded_rows("train", "v1")["RELATIVE_PATH"])


def test_a_champion_with_another_length_makes_the_table_again(cataloged):
    w = cataloged
    w.write_embedding_rows(rows_for(w, "train", "v1", {"x": [1.0, 0.0]}))
    assert w.embeddings_dimension() == 2
    assert w.prepare_embeddings(2) is False  # same length: kept
    w.write_embedding_rows(rows_for(w, "test", "v2", {"x": [1.0, 0.0, 0.0, 0.0]}))
    assert w.embeddings_dimension() == 4
    assert w.read_embeddings(model_version="v1").empty  # another length cannot be compared
    assert len(w.read_embeddings(model_version="v2")) == 4


def test_the_search_sees_new_embeddings_and_predictions_at_once(cataloged):
    """The DuckDB search keeps a matrix in memory: a write (of embeddings, or of predictions
    that label test images) is seen by the next query."""
    w = cataloged
    train = rows_for(w, "train", "v1", {"x": [1.0, 0.0]})
    w.write_embedding_rows(train[:1])
    assert list(w.nearest_embeddings([1.0, 0.0], 5, "v1")["STAGE"]) == ["train"]
    [test_row] = [r for r in rows_for(w, "test", "v1", {"x": [0.0, 1.0]})][:1]
    w.write_embedding_rows([test_row])
    found = w.nearest_embeddings([0.0, 1.0], 5, "v1")
    assert list(found["STAGE"]) == ["test", "train"] and found["LABEL"].iloc[0] is None
    catalog = w.read_catalog("clothing_test")
    scored = predictions(catalog[catalog["RELATIVE_PATH"] == test_row["RELATIVE_PATH"]], "v1")
    assert w.write_predictions(scored) == 1
    assert w.nearest_embeddings([0.0, 1.0], 1, "v1")["LABEL"].tolist() == ["hat"]


def test_before_any_embedding_reads_are_empty_and_bad_input_is_refused_before_sql(warehouse):  # noqa: F811
    """Runs on fakesnow too: no statement here creates or reads a VECTOR."""
    assert warehouse.embeddings_dimension() is None
    assert warehouse.read_embeddings().empty
    assert list(warehouse.read_embeddings(stage="test").columns) == [
        "RELATIVE_PATH", "STAGE", "MODEL_VERSION", "CONTENT_SHA256", "EMBEDDING", "PHASH",
        "PHASH_CENTER",
    ]  # fmt: skip
    assert warehouse.newest_embedded_version() is None
    assert warehouse.delete_stale_embeddings() == 0
    assert warehouse.write_embedding_rows([]) == 0
    row = {
        "RELATIVE_PATH": "hat/a.jpg", "STAGE": "train", "MODEL_VERSION": "v1", "SIZE": 1,
        "LAST_MODIFIED": None, "ETAG": None, "CONTENT_SHA256": "x", "ERROR": None,
        "EMBEDDING": np.ones(2, dtype=np.float32), "EMBEDDED_AT": datetime.now(UTC),
    }  # fmt: skip
    with pytest.raises(EmbeddingError, match="different lengths"):
        warehouse.write_embedding_rows([row, {**row, "EMBEDDING": np.ones(3)}])
    with pytest.raises(EmbeddingError, match="unknown embedding stage"):
        warehouse.read_embeddings(stage="validation")
    with pytest.raises(EmbeddingError, match="k must be"):
        warehouse.nearest_embeddings([1.0, 0.0], 0, "v1")
    # only ERRORs and no table yet: nothing to write until a length is known
    assert warehouse.write_embedding_rows([{**row, "EMBEDDING": None, "ERROR": "bad"}]) == 0
    assert warehouse.embeddings_dimension() is None
