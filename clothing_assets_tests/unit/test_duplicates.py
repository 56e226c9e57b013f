"""The near-duplicate pass on synthetic unit vectors: exact pairs by hash, near pairs by a
blocked similarity product whose block size changes nothing, train-first pairs. The frames have
no perceptual hashes, so a pair is near by its cosine alone (`confirm` set to the threshold);
the rule with hashes has its own tests (test_near_copy_rule.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from clothing_assets.ml.duplicates import (
    calibrate_threshold,
    duplicate_pairs,
    leaked_train_paths,
    pair_counts,
    similar_index_pairs,
)


def _unit(rng: np.random.Generator, n: int, d: int = 64) -> np.ndarray:
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _near(vector: np.ndarray, rng: np.random.Generator, noise: float = 0.05) -> np.ndarray:
    copy = vector + noise * rng.standard_normal(vector.shape).astype(np.float32)
    return copy / np.linalg.norm(copy)


def test_every_pair_above_the_threshold_is_found_whatever_the_block_size_or_screen():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 200)
    vectors[150] = _near(vectors[3], rng)
    vectors[199] = _near(vectors[120], rng)
    brute = vectors @ vectors.T
    expected = {(i, j) for i, j in zip(*np.nonzero(brute >= 0.8), strict=True) if i < j}
    assert expected == {(3, 150), (120, 199)}
    for block_rows, bf16 in itertools.product((1, 7, 64, 1000), (False, True)):
        i, j, similarity = similar_index_pairs(vectors, 0.8, block_rows=block_rows, bf16=bf16)
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == expected
        assert similarity == pytest.approx(brute[i, j], abs=1e-5)


def _frame(vectors, paths, stages, hashes) -> pd.DataFrame:
    return pd.DataFrame({
        "RELATIVE_PATH": paths, "STAGE": stages, "CONTENT_SHA256": hashes,
        "EMBEDDING": list(vectors),
    })  # fmt: skip


def test_exact_and_near_pairs_within_and_across_stages():
    rng = np.random.default_rng(1)
    vectors = _unit(rng, 6)
    vectors[1] = vectors[0]  # same bytes: exact, not also near
    vectors[3] = _near(vectors[2], rng)  # a test copy of a train image
    vectors[5] = _near(vectors[4], rng)  # two test images alike
    frame = _frame(
        vectors,
        ["hat/a.jpg", "hat/a_copy.jpg", "shoes/s.jpg", "shoes/s_small.jpg", "x1.jpg", "x2.jpg"],
        ["train", "train", "train", "test", "test", "test"],
        ["h0", "h0", "h2", "h3", "h4", "h5"],
    )
    pairs = duplicate_pairs(frame, 0.9, confirm=0.9)
    as_tuples = {tuple(r) for r in pairs[["PATH_A", "STAGE_A", "PATH_B", "STAGE_B", "KIND"]]
                 .itertuples(index=False)}  # fmt: skip
    assert as_tuples == {
        ("hat/a.jpg", "train", "hat/a_copy.jpg", "train", "exact"),
        ("shoes/s.jpg", "train", "shoes/s_small.jpg", "test", "near"),
        ("x1.jpg", "test", "x2.jpg", "test", "near"),
    }
    assert pairs["SIMILARITY"].is_monotonic_decreasing
    assert pairs.iloc[0]["KIND"] == "exact"
    assert leaked_train_paths(pairs) == {"shoes/s.jpg"}
    counts = pair_counts(pairs)
    assert (counts["exact"], counts["near"]) == (1, 2)
    assert (counts["train"], counts["test"], counts["train_test"]) == (1, 1, 1)


def test_a_cross_stage_pair_has_its_train_image_first_whatever_the_row_order():
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 2)
    vectors[1] = _near(vectors[0], rng, noise=0.01)
    frame = _frame(vectors, ["a_test.jpg", "z_train.jpg"], ["test", "train"], ["h1", "h2"])
    pair = duplicate_pairs(frame, 0.9, confirm=0.9).iloc[0]
    assert (pair["PATH_A"], pair["STAGE_A"], pair["STAGE_B"]) == ("z_train.jpg", "train", "test")


def test_no_embeddings_or_one_give_no_pairs():
    empty = _frame(np.zeros((0, 4), np.float32), [], [], [])
    assert duplicate_pairs(empty, 0.9, confirm=0.9).empty
    one = _frame(np.eye(1, 4, dtype=np.float32), ["a.jpg"], ["train"], ["h"])
    assert duplicate_pairs(one, 0.9, confirm=0.9).empty


def test_the_calibrated_threshold_keeps_the_precision_and_finds_the_most_copies():
    similarities = [0.99, 0.97, 0.95, 0.93, 0.91, 0.90, 0.88, 0.86, 0.70]
    is_copy = [True, True, True, False, True, True, False, False, True]
    # at 0.90 and above: 5 copies of 6 pairs; only down to 0.95 are all of them copies
    assert calibrate_threshold(similarities, is_copy, min_precision=1.0) == pytest.approx(0.94)
    assert calibrate_threshold(similarities, is_copy, min_precision=0.8) == pytest.approx(0.89)
    with pytest.raises(ValueError, match="planted copy"):
        calibrate_threshold([0.9], [False])


def test_the_bfloat16_screen_keeps_float32s_answer_at_the_threshold():
    rng = np.random.default_rng(4)
    vectors = _unit(rng, 300, d=1280) * 0.05  # small shared part, so the pairs are the planted
    for i, cosine in enumerate((0.8204, 0.8196, 0.95)):
        base = np.zeros(1280, np.float32)
        base[2 * i] = 1.0
        other = np.zeros(1280, np.float32)
        other[2 * i], other[2 * i + 1] = cosine, np.sqrt(1 - cosine**2)
        vectors[10 * i], vectors[10 * i + 5] = base, other
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    plain = similar_index_pairs(vectors, 0.82, bf16=False)
    screened = similar_index_pairs(vectors, 0.82, bf16=True)
    assert set(zip(*screened[:2], strict=True)) == set(zip(*plain[:2], strict=True))
    assert set(zip(plain[0].tolist(), plain[1].tolist(), strict=True)) == {(0, 5), (20, 25)}
    assert screened[2] == pytest.approx(plain[2], abs=1e-6)
