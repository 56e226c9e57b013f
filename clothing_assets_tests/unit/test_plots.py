"""Confusion matrix and per-class scores (plots.py)."""

from __future__ import annotations

import math

import pytest

from clothing_assets.plots import confusion_matrix, per_class_scores


def test_confusion_matrix_and_scores():
    counts = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    precision, recall = per_class_scores(counts)
    assert precision[1] == pytest.approx(2 / 3) and recall[0] == pytest.approx(0.5)
    assert math.isnan(precision[2])


def test_embedding_map_draws_labelled_stages():
    import io

    import numpy as np
    from PIL import Image

    from clothing_assets.plots import embedding_map_png

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((6, 8)).astype(np.float32)
    png = embedding_map_png(vectors, ["hat", "hat", None, "shoes", "shoes", "hat"],
                            ["train", "train", "test", "train", "test", "test"], "six")  # fmt: skip
    assert Image.open(io.BytesIO(png)).format == "PNG"
