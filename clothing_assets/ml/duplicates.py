"""Near-duplicate pairs among embedded images: exact copies by content hash, near copies by
the cosine similarity of their L2-normalised embeddings confirmed by their perceptual hashes.

A fine-tuned classifier pulls a whole class together, so no cosine threshold alone tells a copy
from another photo of the same kind of garment. The pass therefore has two steps: the
embeddings propose candidates at a low cosine threshold (CANDIDATE_THRESHOLD, where nearly
every copy is a candidate), and a candidate is a near copy when its two images' perceptual
hashes (`ml.phash`, of the same decode as the embedding) are within MAX_HAMMING bits, or its
cosine is at least CONFIRM_THRESHOLD. Each image has two hashes, of the whole image and of its
central 90 %, and a pair's distance is the least of whole-whole and centre-whole either way, so
a copy cropped by up to about 10 % still matches. A pair whose images lack hashes is confirmed
by the cosine alone. Calibrated with bench/duplicates_bench.py on the shared train stage with
10 % of it copied four ways (resized to half, JPEG quality 40, cropped by 10 %, PNG) and
byte-exact, with the main job's Lite0 champion: candidates at 0.80, 6 bits, confirmed at 0.98 found
99.5 % of the copy pairs at 99.2 % precision (the cosine alone: 83.1 % at 96.0 % at 0.94, and
99.1 % at 10.1 % at 0.82); BENCHMARKS.md, Near-duplicates and label issues.

The similarity pass is a blocked matrix product: each block of rows is multiplied with the
rows after it (the upper triangle only), so memory stays at one block x n similarities and
BLAS does the work on every core; on AMX-BF16 CPUs a bfloat16 product screens each block first.
Candidates are confirmed block by block (a popcount of XORs over the block's candidates only),
so only confirmed pairs are held. Its time grows with the square of the embeddings: 10,000 x
1,280 took 1.9 s in float32 and 0.7 s screened on a loaded 2-core AMX Xeon; 100,000 (the
planted stage padded with random vectors) took 40.6 s at CANDIDATE_THRESHOLD, the lower
threshold sending more rows from the screen to the float32 product (39.1 s and 52.7 s at 0.94
and 0.80 back to back, under another job's load). Kept free of Dagster; torch is imported only
for the screen.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

PAIR_COLUMNS = ["PATH_A", "STAGE_A", "PATH_B", "STAGE_B", "SIMILARITY", "KIND"]
# The stage order of a pair's two sides: a cross-stage pair has its train image as A.
STAGE_ORDER = {"train": 0, "test": 1}
# Rows per block of the matrix product: 1024 x 100,000 float32 similarities are 400 MB at the
# first block and shrink after it; 512 and 2048 ran slower over 10,000 embeddings.
DEFAULT_BLOCK_ROWS = 1024
# How far below the threshold a bfloat16 screen passes a row: a bfloat16 product of two unit
# vectors is off by at most d * 2^-8 * max|x_k y_k|, in practice below 0.01 at d = 1280
BF16_MARGIN = 0.03
# Cosine similarity at or above which two embeddings are a candidate pair, and at or above which
# a candidate is a near copy without its hashes; the most bits in which a candidate's perceptual
# hashes may differ for it to be a near copy. Calibrated on the champion's embeddings (see the
# module's docstring): the copies' hashes differed in at most 4 bits (flips come in pairs: the
# bits split the coefficients at their median), 38 of the 62,197 other candidates at 0.80 were
# within 6 bits, and the cosine alone at 0.98 confirmed no candidate the hashes missed.
CANDIDATE_THRESHOLD = 0.80
MAX_HAMMING = 6
CONFIRM_THRESHOLD = 0.98
HASH_COLUMNS = ("PHASH", "PHASH_CENTER")  # of the whole image and of its central 90 %
# Keeps the pairs (i, j, similarity) of one block that are near copies: a boolean mask.
PairFilter = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def similar_index_pairs(
    vectors: np.ndarray,
    threshold: float,
    *,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    bf16: bool | None = None,
    keep: PairFilter | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) of every pair i < j of rows of `vectors` (L2-normalised, [n, d])
    whose dot product is at least `threshold`, in row order; each similarity in float32.
    With `keep`, only the pairs it keeps, filtered block by block so that the candidates of
    one block at most are held at once.

    `bf16` screens each block in bfloat16 (None: on AMX-BF16 CPUs, where its product ran 2.7x
    faster than float32's) and computes the rows the screen passes again in float32, so the
    answer is float32's: the screen's margin, BF16_MARGIN, exceeds a bfloat16 dot product's
    error for unit vectors."""
    matrix = np.ascontiguousarray(vectors, dtype=np.float32)
    if bf16 is None:
        from clothing_assets.ml.cpu import cpu_kind

        bf16 = cpu_kind() == "AMX-BF16"
    screen = _bf16_screen(matrix) if bf16 else None
    found_i, found_j, found_s = [], [], []
    for start in range(0, len(matrix), block_rows):
        stop = min(start + block_rows, len(matrix))
        if screen is None:
            block = matrix[start:stop] @ matrix[start:].T  # [rows, n - start]: j >= start
            rows = _rows_with_a_pair(block, start, stop, threshold)
            block = block[rows]
        else:
            rough = screen(start, stop)
            rows = _rows_with_a_pair(rough, start, stop, threshold - BF16_MARGIN)
            del rough
            block = matrix[start + rows] @ matrix[start:].T  # float32, the screened rows only
            for k, row in enumerate(rows):
                block[k, : row + 1] = -np.inf
        hit_rows, cols = np.nonzero(block >= threshold)
        i, j, similarity = rows[hit_rows] + start, cols + start, block[hit_rows, cols]
        if keep is not None:
            kept = keep(i, j, similarity)
            i, j, similarity = i[kept], j[kept], similarity[kept]
        found_i.append(i)
        found_j.append(j)
        found_s.append(similarity)
    if not found_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_s)


def _mask_lower(block: np.ndarray, start: int, stop: int) -> None:
    """Set the block's diagonal and what lies below it (pairs j <= i) to -inf."""
    square = block[:, : stop - start]
    square[np.tril_indices(stop - start)] = -np.inf


def _rows_with_a_pair(block: np.ndarray, start: int, stop: int, threshold: float) -> np.ndarray:
    """The block's rows (from 0) with a pair j > i at or above `threshold`: one reduction
    over the block, so that only those rows are searched."""
    _mask_lower(block, start, stop)
    return np.flatnonzero(block.max(axis=1) >= threshold)


def _bf16_screen(matrix: np.ndarray):
    """`screen(start, stop)`: rows start..stop times rows start.. in bfloat16, as float32."""
    import torch

    rough = torch.from_numpy(matrix).to(torch.bfloat16)

    def screen(start: int, stop: int) -> np.ndarray:
        return (rough[start:stop] @ rough[start:].T).float().numpy()

    return screen


def _oriented(paths: Sequence[str], stages: Sequence[str], i: int, j: int) -> tuple:
    """(path_a, stage_a, path_b, stage_b) with the train side (then the smaller path) first."""
    a, b = (paths[i], stages[i]), (paths[j], stages[j])
    if (STAGE_ORDER.get(b[1], 2), b[0]) < (STAGE_ORDER.get(a[1], 2), a[0]):
        a, b = b, a
    return a[0], a[1], b[0], b[1]


def exact_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """Every pair of rows of `frame` (RELATIVE_PATH, STAGE, CONTENT_SHA256) with equal
    CONTENT_SHA256, KIND 'exact' and SIMILARITY 1."""
    paths, stages = frame["RELATIVE_PATH"].tolist(), frame["STAGE"].tolist()
    records = []
    hashes = frame["CONTENT_SHA256"].dropna()
    for members in hashes.groupby(hashes).indices.values():
        for i, j in itertools.combinations(sorted(members), 2):
            records.append((*_oriented(paths, stages, i, j), 1.0, "exact"))
    return pd.DataFrame.from_records(records, columns=PAIR_COLUMNS)


def frame_hashes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(whole, centre, has) of `frame`'s rows: their HASH_COLUMNS as int64 (0 where missing)
    and whether a row has both; a frame without the columns has none."""
    if not all(column in frame.columns for column in HASH_COLUMNS):
        zeros = np.zeros(len(frame), dtype=np.int64)
        return zeros, zeros, np.zeros(len(frame), dtype=bool)
    columns = [pd.array(frame[c], dtype="Int64") for c in HASH_COLUMNS]
    has = ~(columns[0].isna() | columns[1].isna())
    whole, centre = (np.asarray(c.fillna(0), dtype=np.int64) for c in columns)
    return whole, centre, np.asarray(has, dtype=bool)


def hash_distances(
    whole: np.ndarray, centre: np.ndarray, i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """The perceptual-hash distance of each pair (i, j): the fewest differing bits between
    the whole images' hashes, or one image's centre hash and the other's whole one (a copy
    cropped by about 10 % looks like the original's centre)."""
    from clothing_assets.ml.phash import hamming

    both = hamming(whole[i], whole[j])
    return np.minimum(both, np.minimum(hamming(centre[i], whole[j]), hamming(whole[i], centre[j])))


def near_copy_filter(
    frame: pd.DataFrame, max_hamming: int = MAX_HAMMING, confirm: float = CONFIRM_THRESHOLD
) -> PairFilter:
    """The rule that confirms a candidate pair of `frame`'s rows as a near copy: both images
    hashed and within `max_hamming` bits (`hash_distances`), or cosine >= `confirm`."""
    whole, centre, has = frame_hashes(frame)

    def keep(i: np.ndarray, j: np.ndarray, similarity: np.ndarray) -> np.ndarray:
        close = has[i] & has[j] & (hash_distances(whole, centre, i, j) <= max_hamming)
        return close | (similarity >= confirm)

    return keep


def duplicate_pairs(
    frame: pd.DataFrame,
    threshold: float = CANDIDATE_THRESHOLD,
    *,
    max_hamming: int = MAX_HAMMING,
    confirm: float = CONFIRM_THRESHOLD,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> pd.DataFrame:
    """The exact and near pairs among `frame`'s rows (RELATIVE_PATH, STAGE, CONTENT_SHA256,
    EMBEDDING, and the HASH_COLUMNS where known), within each stage and across them, most
    similar first. A pair with equal content hashes is 'exact' only; another whose cosine is
    at least `threshold` is 'near' when `near_copy_filter` confirms it."""
    frame = frame.reset_index(drop=True)
    exact = exact_pairs(frame)
    if len(frame) < 2:
        return exact
    vectors = np.stack(frame["EMBEDDING"].to_numpy()).astype(np.float32, copy=False)
    keep = near_copy_filter(frame, max_hamming, confirm)
    i, j, similarity = similar_index_pairs(vectors, threshold, block_rows=block_rows, keep=keep)
    hashes = frame["CONTENT_SHA256"].to_numpy()
    same = (hashes[i] == hashes[j]) & pd.notna(hashes[i])
    paths, stages = frame["RELATIVE_PATH"].tolist(), frame["STAGE"].tolist()
    near = pd.DataFrame.from_records(
        [
            (*_oriented(paths, stages, a, b), float(s), "near")
            for a, b, s in zip(i[~same], j[~same], similarity[~same], strict=True)
        ],
        columns=PAIR_COLUMNS,
    )
    parts = [part for part in (exact, near) if not part.empty]
    pairs = pd.concat(parts, ignore_index=True) if parts else exact
    pairs["SIMILARITY"] = pairs["SIMILARITY"].astype("float64")
    return pairs.sort_values(
        ["SIMILARITY", "PATH_A", "PATH_B"], ascending=[False, True, True]
    ).reset_index(drop=True)


def leaked_train_paths(pairs: pd.DataFrame) -> set[str]:
    """The train images that have an exact or near copy in the test stage."""
    cross = pairs[(pairs["STAGE_A"] == "train") & (pairs["STAGE_B"] == "test")]
    return set(cross["PATH_A"])


def pair_counts(pairs: pd.DataFrame) -> dict[str, int]:
    """Pairs per KIND and per scope: 'train', 'test' (within a stage) and 'train_test'."""
    scope = (
        np.where(pairs["STAGE_A"] == pairs["STAGE_B"], pairs["STAGE_A"], "train_test")
        if len(pairs)
        else np.array([], dtype=object)
    )
    counts = {"exact": 0, "near": 0, "train": 0, "test": 0, "train_test": 0}
    for name, value in pd.Series(pairs["KIND"]).value_counts().items():
        counts[str(name)] = int(value)
    for name, value in pd.Series(scope, dtype=object).value_counts().items():
        counts[str(name)] = int(value)
    return counts


def calibrate_threshold(
    similarities: Sequence[float], is_copy: Sequence[bool], *, min_precision: float = 0.99
) -> float:
    """The lowest similarity threshold at which at least `min_precision` of the pairs at or
    above it are copies (so the most copies are found at that precision), from labelled pairs:
    `similarities` of candidate pairs and whether each is a planted copy. Halfway to the next
    lower pair's similarity, so that a copy a little less alike still passes."""
    scores = np.asarray(similarities, dtype=np.float64)
    copies = np.asarray(is_copy, dtype=bool)
    if not copies.any():
        raise ValueError("calibration needs at least one planted copy among the pairs")
    order = np.argsort(-scores, kind="stable")
    scores, copies = scores[order], copies[order]
    precision = np.cumsum(copies) / np.arange(1, len(scores) + 1)
    ok = np.flatnonzero((precision >= min_precision) & copies)
    last = int(ok[-1]) if len(ok) else 0
    below = scores[last + 1] if last + 1 < len(scores) else scores[last]
    return float((scores[last] + below) / 2)


def candidate_threshold(
    similarities: Sequence[float], is_copy: Sequence[bool], *, min_recall: float = 0.99
) -> float:
    """The highest cosine threshold at which at least `min_recall` of the planted copies among
    the labelled pairs are candidates (`similarities` of the pairs, and whether each is a
    copy), halfway to the next lower pair's similarity: the candidate threshold that loses at
    most 1 - `min_recall` of the copies before their hashes are compared."""
    scores = np.sort(np.asarray(similarities, dtype=np.float64)[np.asarray(is_copy, dtype=bool)])
    if not len(scores):
        raise ValueError("calibration needs at least one planted copy among the pairs")
    lost = int(np.floor((1 - min_recall) * len(scores) + 1e-9))
    lowest_kept = scores[lost]
    below = np.asarray(similarities, dtype=np.float64)
    below = below[below < lowest_kept]
    return float((lowest_kept + below.max()) / 2) if len(below) else float(lowest_kept)
