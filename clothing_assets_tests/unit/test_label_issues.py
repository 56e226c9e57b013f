"""The label-review queue on synthetic embeddings: out-of-fold probabilities, confident
learning's flags, the ranking, and how people's decisions change labels and the queue."""

from __future__ import annotations

import numpy as np
import pandas as pd

from clothing_assets.ml.label_issues import (
    ISSUE_COLUMNS,
    effective_labels,
    fold_of,
    label_issues,
    out_of_fold_probabilities,
    unanswered,
)

CLASSES = ["hat", "pants", "shoes", "skirt"]


def _clusters(per_class: int, seed: int = 0, spread: float = 0.6):
    """Unit vectors around one centre per class; (features, class names, paths)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(CLASSES), 32))
    features, given, paths = [], [], []
    for c, name in enumerate(CLASSES):
        points = centres[c] + spread * rng.standard_normal((per_class, 32))
        features.append(points)
        given += [name] * per_class
        paths += [f"{name}/{name}_{i:03d}.jpg" for i in range(per_class)]
    features = np.concatenate(features).astype(np.float32)
    return features / np.linalg.norm(features, axis=1, keepdims=True), given, paths


def test_folds_hold_every_class_and_partition_the_rows():
    labels = np.repeat(np.arange(3), [10, 7, 5])
    folds = fold_of(labels, 5)
    assert set(folds.tolist()) == set(range(5))
    for label in range(3):
        counts = np.bincount(folds[labels == label], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_planted_mislabels_rank_first():
    features, given, paths = _clusters(40)
    rng = np.random.default_rng(5)
    planted = rng.choice(len(given), size=8, replace=False)
    for i in planted:
        given[i] = CLASSES[(CLASSES.index(given[i]) + 1) % len(CLASSES)]
    truth = {paths[i]: paths[i].split("/")[0] for i in planted}
    issues = label_issues(paths, given, features)
    assert list(issues.columns) == ISSUE_COLUMNS
    assert issues["RANK"].tolist() == list(range(1, len(issues) + 1))
    assert issues["SCORE"].is_monotonic_decreasing
    top = issues.head(2 * len(planted))
    assert set(truth) <= set(top["RELATIVE_PATH"])
    suggested = dict(zip(top["RELATIVE_PATH"], top["SUGGESTED"], strict=True))
    assert all(suggested[p] == truth[p] for p in truth)


def test_an_image_is_never_judged_by_a_head_that_trained_on_it():
    """Two identical vectors with different labels: a head that saw a row would give its own
    label a share; out of fold, each row's probability comes only from the other rows, so the
    lone odd label gets almost none."""
    features, given, paths = _clusters(30, spread=0.2)
    odd = 5  # a hat whose label says pants
    given[odd] = "pants"
    labels = np.array([CLASSES.index(g) for g in given])
    probabilities = out_of_fold_probabilities(features, labels, len(CLASSES), weight_decay=0.0)
    assert probabilities[odd, CLASSES.index("pants")] < 0.2
    assert probabilities[odd].argmax() == CLASSES.index("hat")


def test_one_class_or_too_few_images_give_an_empty_queue():
    features, _given, paths = _clusters(3)
    assert label_issues(paths[:3], ["hat"] * 3, features[:3]).empty
    assert label_issues(paths[:2], ["hat", "pants"], features[:2]).empty


def test_decisions_set_labels_and_answer_the_queue():
    rows = pd.DataFrame({"RELATIVE_PATH": ["hat/a.jpg", "hat/b.jpg", "pants/c.jpg"],
                         "CLASS": ["hat", "hat", "pants"]})  # fmt: skip
    decisions = pd.DataFrame({
        "RELATIVE_PATH": ["hat/a.jpg", "pants/c.jpg"], "DECISION": ["fix", "keep"],
        "LABEL": ["shoes", "pants"], "PREVIOUS_LABEL": ["hat", "pants"],
    })  # fmt: skip
    assert effective_labels(rows, decisions).tolist() == ["shoes", "hat", "pants"]
    issues = pd.DataFrame({
        "RELATIVE_PATH": ["hat/a.jpg", "hat/b.jpg", "pants/c.jpg"],
        "GIVEN": ["hat", "hat", "pants"], "SUGGESTED": ["shoes", "pants", "hat"],
        "SCORE": [0.9, 0.8, 0.7], "RANK": [1, 2, 3],
    })  # fmt: skip
    assert unanswered(issues, decisions)["RELATIVE_PATH"].tolist() == ["hat/b.jpg"]
    # flagged again under a label no person chose: back in the queue
    again = issues.assign(GIVEN=["pants", "hat", "pants"])
    assert unanswered(again, decisions)["RELATIVE_PATH"].tolist() == ["hat/a.jpg", "hat/b.jpg"]
