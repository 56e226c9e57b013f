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


@pytest.mark.parametrize("shape", [(40, 8), (5, 30), (300, 64)])
def test_principal_plane_is_the_svds_first_two_components(shape):
    import numpy as np

    from clothing_assets.plots import principal_plane

    rng = np.random.default_rng(1)
    vectors = rng.standard_normal(shape) * np.linspace(3, 0.1, shape[1])  # distinct variances
    centred = vectors - vectors.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ axes[:2].T
    got = principal_plane(vectors.astype(np.float32))
    assert got.shape == (shape[0], 2)
    for k in range(2):  # each axis up to its sign
        sign = np.sign(got[:, k] @ expected[:, k])
        np.testing.assert_allclose(
            sign * got[:, k], expected[:, k], atol=1e-3 * np.abs(expected).max()
        )
    assert not principal_plane(vectors[:1]).any()
