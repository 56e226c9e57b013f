"""The learning-rate schedule and the epoch's batches of training (ml/train.py)."""

from __future__ import annotations

import pytest
import torch

from clothing_assets.ml.engine import epoch_batches, warmup_cosine


@pytest.mark.parametrize(("total", "warmup"), [(100, 10), (10, 0), (1, 0)])
def test_warmup_cosine_rises_then_decays_to_zero(total, warmup):
    f = warmup_cosine(total, warmup)
    if warmup:
        assert f(0) == pytest.approx(1 / warmup) and f(warmup - 1) == pytest.approx(1.0)
    assert f(warmup) == pytest.approx(1.0)
    assert f(total) == pytest.approx(0.0, abs=1e-9)
    values = [f(s) for s in range(warmup, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    ("n", "batch", "expected"), [(100, 32, 3), (64, 64, 1), (10, 64, 1), (1, 8, 0)]
)
def test_epoch_batches_are_full_and_seeded(n, batch, expected):
    batches = epoch_batches(n, batch, seed=3, epoch=2)
    assert len(batches) == expected
    assert all(len(b) == min(batch, n) for b in batches)
    flat = torch.cat(batches) if batches else torch.empty(0)
    assert len(set(flat.tolist())) == len(flat)
    again = epoch_batches(n, batch, seed=3, epoch=2)
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
