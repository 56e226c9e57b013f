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
