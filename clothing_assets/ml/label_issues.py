"""Training images whose given label their embeddings disagree with, in the manner of
confident learning (Northcutt et al., 2021): out-of-fold class probabilities from a linear
head on the embeddings, a per-class confidence threshold, and a rank by self-confidence.

Out-of-fold: the images are dealt into folds, and each fold's probabilities come from a head
trained on the other folds only, so that no image is judged by a model that learned its
label. Kept free of Dagster.

Why not cleanlab: its `find_label_issues` starts from the same out-of-fold probabilities,
which it leaves to the caller (with scikit-learn's `cross_val_predict`); taking it would add
cleanlab and scikit-learn (with SciPy, joblib and threadpoolctl) to the locked dependencies
for the threshold-and-rank step that is a few lines here, tested on planted mislabels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # torch loads with the head's fit; the label columns need none of it
    import torch

ISSUE_COLUMNS = ["RELATIVE_PATH", "GIVEN", "SUGGESTED", "SCORE", "RANK"]
DEFAULT_FOLDS = 5
# L2 penalty of the linear head per image: a mislabelled image must not be memorised by the
# folds that train on it, or its class's threshold rises with it.
DEFAULT_WEIGHT_DECAY = 1e-3
# Below this many feature values a fit runs in one thread: on a busy 2-core machine a small
# L-BFGS fit took 18.8 s in two threads against 0.27 s in one (the threads wait on each other)
SMALL_FIT = 1 << 22


def effective_labels(rows: pd.DataFrame, decisions: pd.DataFrame) -> pd.Series:
    """The label of each training row (RELATIVE_PATH, CLASS from its folder): a person's
    newest decision (clothing_label_fixes, one row per path) where there is one, else CLASS."""
    decided = dict(zip(decisions["RELATIVE_PATH"], decisions["LABEL"], strict=True))
    chosen = rows["RELATIVE_PATH"].map(decided)
    return chosen.where(chosen.notna(), rows["CLASS"]).astype(object)


def unanswered(issues: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The rows of `issues` (RELATIVE_PATH, GIVEN, ...) no person has answered: a row leaves
    the queue once the newest decision on its path (`decisions`, one row per path) set or
    confirmed its GIVEN label, or replaced it."""
    newest = decisions.set_index("RELATIVE_PATH")
    labels = newest["LABEL"].to_dict()
    previous = newest["PREVIOUS_LABEL"].to_dict()
    answered = [
        path in labels and given in (labels[path], previous[path])
        for path, given in zip(issues["RELATIVE_PATH"], issues["GIVEN"], strict=True)
    ]
    return issues[~np.array(answered, dtype=bool)]


def fold_of(labels: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """Each image's fold (0..folds-1), dealt class by class in a seeded shuffle, so that every
    fold holds about the same share of each class."""
    rng = np.random.default_rng(seed)
    assignment = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        assignment[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    return assignment


def fit_linear_head(
    features: np.ndarray, labels: np.ndarray, classes: int, *, weight_decay: float, steps: int
) -> torch.nn.Linear:
    """A softmax-regression head fitted with L-BFGS on the whole set at once."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    head = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=steps,
                                  line_search_fn="strong_wolfe")  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss = loss + weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return head


def out_of_fold_probabilities(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    *,
    folds: int = DEFAULT_FOLDS,
    weight_decay: float = DEFAULT_WEIGHT_DECAY,
    steps: int = 200,
    seed: int = 0,
) -> np.ndarray:
    """[n, classes] probabilities, each row from a head that did not train on that row."""
    import torch

    threads = torch.get_num_threads()
    if features.size < SMALL_FIT:
        torch.set_num_threads(1)
    try:
        return _out_of_fold(features, labels, classes, folds, weight_decay, steps, seed)
    finally:
        torch.set_num_threads(threads)


def _out_of_fold(features, labels, classes, folds, weight_decay, steps, seed) -> np.ndarray:
    import torch

    folds = max(2, min(folds, len(labels)))
    assignment = fold_of(labels, folds, seed)
    probabilities = np.zeros((len(labels), classes), dtype=np.float64)
    torch.manual_seed(seed)
    for fold in range(folds):
        held = assignment == fold
        if not held.any():
            continue
        head = fit_linear_head(features[~held], labels[~held], classes,
                               weight_decay=weight_decay, steps=steps)  # fmt: skip
        with torch.no_grad():
            logits = head(torch.from_numpy(np.ascontiguousarray(features[held], np.float32)))
        probabilities[held] = torch.softmax(logits, dim=1).double().numpy()
    return probabilities


def confident_issues(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which rows confident learning counts off the diagonal of its confident joint: the class
    the row is confidently in (the most probable of the classes whose probability reaches
    that class's threshold, the mean probability its own members give it) is not its label."""
    classes = probabilities.shape[1]
    thresholds = np.array([
        probabilities[labels == c, c].mean() if (labels == c).any() else np.inf
        for c in range(classes)
    ])  # fmt: skip
    confident = np.where(probabilities >= thresholds, probabilities, -np.inf)
    has_class = np.isfinite(confident).any(axis=1)
    return has_class & (confident.argmax(axis=1) != labels)


def rank_label_issues(
    paths: Sequence[str], given: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    """The rows confident learning flags (ISSUE_COLUMNS), most suspicious first: SCORE is one
    minus the probability of the given label, SUGGESTED the most probable class."""
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[g] for g in given], dtype=np.int64)
    # confident learning's off-diagonal rows, and the rows whose most probable class is not
    # the given one (cleanlab's 'both' filters as a union): a row whose true class misses that
    # class's threshold is still one the data disagrees with
    flagged = confident_issues(probabilities, labels) | (probabilities.argmax(axis=1) != labels)
    score = 1.0 - probabilities[np.arange(len(labels)), labels]
    frame = pd.DataFrame({
        "RELATIVE_PATH": list(paths),
        "GIVEN": list(given),
        "SUGGESTED": [classes[i] for i in probabilities.argmax(axis=1)],
        "SCORE": score,
    })[flagged]  # fmt: skip
    frame = frame.sort_values(["SCORE", "RELATIVE_PATH"], ascending=[False, True])
    frame["RANK"] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame.reset_index(drop=True)[ISSUE_COLUMNS]


def label_issues(
    paths: Sequence[str], given: Sequence[str], features: np.ndarray, *, folds: int = DEFAULT_FOLDS
) -> pd.DataFrame:
    """The label-review queue of images `paths` with labels `given` and embeddings
    `features` [n, d]: out-of-fold probabilities, then `rank_label_issues`."""
    classes = sorted(set(given))
    if len(classes) < 2 or len(paths) < 2 * len(classes):
        return pd.DataFrame(columns=ISSUE_COLUMNS)
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[g] for g in given], dtype=np.int64)
    # centred and scaled: the unit vectors share a large common direction, and a head on raw
    # ones left planted mislabels up to 0.25 of their given class against about 0 centred
    centred = features - features.mean(axis=0)
    centred = centred / max(float(centred.std()), 1e-12)
    probabilities = out_of_fold_probabilities(centred, labels, len(classes), folds=folds)
    return rank_label_issues(paths, given, probabilities, classes)
