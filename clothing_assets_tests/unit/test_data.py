"""Catalog rows to training data (ml/data.py): stable stratified splits, labels, downsampling."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from clothing_assets.ml.data import downsample, labelled_split, stable_hash, stratified_split


@pytest.mark.parametrize(("n_per_class", "fraction"), [(10, 0.1), (50, 0.2), (3, 0.5), (1, 0.3)])
def test_stratified_split_is_stable_disjoint_and_per_class(n_per_class, fraction):
    paths = [f"c{c}/{i}.jpg" for c in range(3) for i in range(n_per_class)]
    labels = [c for c in range(3) for _ in range(n_per_class)]
    train, val = stratified_split(paths, labels, val_fraction=fraction)
    assert sorted(train + val) == list(range(len(paths)))
    for c in range(3):
        n_val = sum(1 for i in val if labels[i] == c)
        assert n_val == min(round(fraction * n_per_class), n_per_class - 1)
    # same answer whatever the order the catalog comes in
    order = list(reversed(range(len(paths))))
    train2, val2 = stratified_split(
        [paths[i] for i in order], [labels[i] for i in order], val_fraction=fraction
    )
    assert sorted(paths[order[i]] for i in val2) == sorted(paths[i] for i in val)


def test_labelled_split_labels_by_sorted_class_and_splits_as_stratified_split():
    rows = pd.DataFrame(
        {
            "RELATIVE_PATH": [f"{c}/{i}.jpg" for c in ("shoes", "hat") for i in range(5)],
            "CLASS": ["shoes"] * 5 + ["hat"] * 5,
        }
    )
    images = torch.arange(10)
    data = labelled_split(rows, images, val_fraction=0.2)
    assert data.classes == ["hat", "shoes"] and data.images is images
    assert data.labels.tolist() == [1] * 5 + [0] * 5
    train, val = stratified_split(
        rows["RELATIVE_PATH"].tolist(), data.labels.tolist(), val_fraction=0.2
    )
    assert (data.train.tolist(), data.val.tolist()) == (train, val)
    assert data.val_class_names() == [rows["CLASS"][i] for i in val]


def test_stable_hash_does_not_depend_on_the_process():
    # fixed expectation: sha1-based, unlike Python's salted hash()
    assert stable_hash("hat/a.jpg") == int.from_bytes(
        __import__("hashlib").sha1(b"hat/a.jpg").digest()[:8], "big"
    )


@pytest.mark.parametrize(
    ("fraction", "per_class"),
    [(1.0, {"a": 10, "b": 4}), (0.5, {"a": 5, "b": 2}), (0.05, {"a": 1, "b": 1})],
)
def test_downsample_keeps_a_stable_share_of_each_class(fraction, per_class):
    frame = pd.DataFrame(
        {"RELATIVE_PATH": [f"a/{i}" for i in range(10)] + [f"b/{i}" for i in range(4)],
         "CLASS": ["a"] * 10 + ["b"] * 4}
    )  # fmt: skip
    kept = downsample(frame, fraction)
    assert kept["CLASS"].value_counts().to_dict() == per_class
    assert kept.equals(downsample(frame.sample(frac=1, random_state=0), fraction))
