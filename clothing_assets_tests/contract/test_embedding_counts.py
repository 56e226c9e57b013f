"""Counting and sampling clothing_embeddings without reading every vector: the counts per
stage of one model version (no ERROR rows), and a sample of at most `limit` embeddings, the same
on every call. Skipped on fakesnow like the rest of clothing_embeddings (VECTOR)."""

from __future__ import annotations

import numpy as np

from clothing_assets_tests.contract.test_embeddings_contract import (  # noqa: F401 - fixtures
    cataloged,
    rows_for,
)
from clothing_assets_tests.contract.test_warehouse_contract import (  # noqa: F401 - fixtures
    stage,
    warehouse,
)


def test_counts_per_stage_leave_out_errors_and_other_versions(cataloged):  # noqa: F811
    w = cataloged
    assert w.embedding_counts("v1") == {}  # no table yet
    train = rows_for(w, "train", "v1", {"x": [1.0, 0.0]})
    train[0] = {**train[0], "EMBEDDING": None, "ERROR": "cannot decode"}
    w.write_embedding_rows(train)
    w.write_embedding_rows(rows_for(w, "test", "v1", {"x": [0.0, 1.0]})[:2])
    w.write_embedding_rows(rows_for(w, "test", "v2", {"x": [0.0, 1.0]}))
    assert w.embedding_counts("v1") == {"test": 2, "train": 3}
    assert w.embedding_counts("v2") == {"test": 4}
    assert w.embedding_counts("none") == {}


def test_a_sample_is_at_most_the_limit_and_the_same_each_time(cataloged):  # noqa: F811
    w = cataloged
    assert w.sample_embeddings("v1", 3).empty  # no table yet
    w.write_embedding_rows(rows_for(w, "train", "v1", {"x": [1.0, 0.0]}))
    w.write_embedding_rows(rows_for(w, "test", "v1", {"x": [0.0, 1.0]}))
    w.write_embedding_rows(rows_for(w, "test", "v2", {"x": [0.0, 1.0]}))
    sample = w.sample_embeddings("v1", 5)
    assert list(sample.columns) == ["RELATIVE_PATH", "STAGE", "EMBEDDING"]
    assert len(sample) == 5 and sample["EMBEDDING"].iloc[0].dtype == np.float32
    again = w.sample_embeddings("v1", 5)
    assert list(zip(sample["STAGE"], sample["RELATIVE_PATH"], strict=True)) == list(
        zip(again["STAGE"], again["RELATIVE_PATH"], strict=True)
    )
    everything = w.sample_embeddings("v1", 100)
    assert len(everything) == 8 and len(everything.drop_duplicates(["STAGE", "RELATIVE_PATH"])) == 8
    assert len(w.sample_embeddings("v2", 100)) == 4
