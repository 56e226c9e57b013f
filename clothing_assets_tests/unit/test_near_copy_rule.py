"""The near-copy rule on hand-made vectors and hashes: a candidate (cosine at or above the
threshold) is a near copy when its perceptual hashes are within max_hamming bits (whole to
whole, or either image's centre to the other's whole), or its cosine reaches `confirm`; a pair
with a missing hash is confirmed by the cosine alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clothing_assets.ml.duplicates import (
    candidate_threshold,
    duplicate_pairs,
    frame_hashes,
    similar_index_pairs,
)

BASE = np.int64(0x0F0F_0F0F_0F0F_0F0F)


def _flip(value: np.int64, bits: int) -> np.int64:
    """`value` with its lowest `bits` bits flipped."""
    return np.int64(int(value) ^ ((1 << bits) - 1))


def _pair(cosine: float, k: int, d: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors at `cosine`, in their own plane (axes 2k, 2k + 1)."""
    a, b = np.zeros(d, np.float32), np.zeros(d, np.float32)
    a[2 * k] = 1.0
    b[2 * k], b[2 * k + 1] = cosine, np.sqrt(1 - cosine**2)
    return a, b


# (name, cosine, B's whole hash, B's centre hash, A's centre hash, hashed, expected near)
CASES = [
    ("close hashes", 0.85, _flip(BASE, 4), BASE, BASE, True, True),
    ("far hashes", 0.85, _flip(BASE, 10), _flip(BASE, 10), ~BASE, True, False),
    ("A's centre is B", 0.85, _flip(BASE, 20), _flip(BASE, 20), _flip(BASE, 20 + 2), True, True),
    ("cosine confirms", 0.99, ~BASE, ~BASE, ~BASE, True, True),
    ("not a candidate", 0.50, BASE, BASE, BASE, True, False),
    ("no hash", 0.90, BASE, BASE, BASE, False, False),
    ("no hash, cosine confirms", 0.99, BASE, BASE, BASE, False, True),
]


def _frame() -> pd.DataFrame:
    rows = []
    for k, (_name, cosine, b_whole, b_centre, a_centre, hashed, _) in enumerate(CASES):
        a, b = _pair(cosine, k)
        for path, vector, whole, centre in ((f"{k}a.jpg", a, BASE, a_centre),
                                            (f"{k}b.jpg", b, b_whole, b_centre)):  # fmt: skip
            rows.append({
                "RELATIVE_PATH": path, "STAGE": "train", "CONTENT_SHA256": path,
                "EMBEDDING": vector,
                "PHASH": int(whole) if hashed or path.endswith("a.jpg") else None,
                "PHASH_CENTER": int(centre) if hashed or path.endswith("a.jpg") else None,
            })  # fmt: skip
    frame = pd.DataFrame(rows)
    for column in ("PHASH", "PHASH_CENTER"):  # from the dicts: a frame rounds them to float
        frame[column] = pd.array([row[column] for row in rows], dtype="Int64")
    return frame


def test_each_candidate_is_confirmed_by_its_hashes_or_a_high_cosine():
    pairs = duplicate_pairs(_frame(), 0.8, max_hamming=6, confirm=0.98)
    found = {int(p.split("a.jpg")[0]) for p in pairs["PATH_A"]}
    expected = {k for k, case in enumerate(CASES) if case[-1]}
    assert found == expected, [CASES[k][0] for k in found ^ expected]
    assert set(pairs["KIND"]) == {"near"}


@pytest.mark.parametrize("block_rows", [1, 3, 1000])
def test_confirming_block_by_block_keeps_what_the_rule_keeps_on_all_candidates(block_rows):
    frame = _frame()
    everything = duplicate_pairs(frame, 0.8, max_hamming=64, confirm=1.01)
    assert len(everything) == sum(case[1] >= 0.8 for case in CASES) - 2  # unhashed: none
    strict = duplicate_pairs(frame, 0.8, max_hamming=6, confirm=0.98, block_rows=block_rows)
    assert strict.equals(duplicate_pairs(frame, 0.8, max_hamming=6, confirm=0.98))


def test_hashes_are_read_exactly_and_a_frame_without_them_has_none():
    frame = pd.DataFrame({"PHASH": pd.array([-(2**63), None, 2**63 - 1], dtype="Int64"),
                          "PHASH_CENTER": pd.array([1, 2, 3], dtype="Int64")})  # fmt: skip
    whole, centre, has = frame_hashes(frame)
    assert whole.tolist() == [-(2**63), 0, 2**63 - 1] and has.tolist() == [True, False, True]
    assert not frame_hashes(pd.DataFrame({"X": [1, 2]}))[2].any()


def test_the_candidate_threshold_keeps_the_asked_share_of_the_copies():
    similarities = [0.99, 0.95, 0.90, 0.85, 0.80, 0.70]
    is_copy = [True, True, False, True, True, False]
    assert candidate_threshold(similarities, is_copy, min_recall=1.0) == pytest.approx(0.75)
    assert candidate_threshold(similarities, is_copy, min_recall=0.75) == pytest.approx(0.825)
    with pytest.raises(ValueError, match="at least one planted copy"):
        candidate_threshold([0.9], [False])
    vectors = np.stack(_frame()["EMBEDDING"].to_numpy())
    assert len(similar_index_pairs(vectors, 0.8)[0]) == sum(case[1] >= 0.8 for case in CASES)
