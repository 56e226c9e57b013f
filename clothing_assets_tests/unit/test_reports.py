"""The training asset's metadata and report files (reports.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize("with_predictions", [True, False])
def test_training_metadata_writes_its_figures_and_a_validation_report_with_predictions(
    tmp_path, with_predictions
):
    from clothing_assets.ml.budget import EpochPlan
    from clothing_assets.ml.data import LabelledImages
    from clothing_assets.ml.settings import TrainSettings
    from clothing_assets.ml.train import EpochStats, FitResult
    from clothing_assets.reports import training_metadata

    history = [EpochStats(1, 1.2, 0.5, 1.1, 0.4, 1e-3, 100, 2.0)]
    history.append(EpochStats(2, 0.9, 0.6, 0.8, 0.75, 5e-4, 120, 2.5))
    data = LabelledImages(
        images=torch.zeros(6, 3, 2, 2, dtype=torch.uint8), labels=torch.tensor([0, 1, 0, 1, 0, 1]),
        classes=["hat", "shoes"], train=torch.tensor([0, 1]), val=torch.tensor([2, 3, 4, 5]),
    )  # fmt: skip
    result = FitResult(
        state_dict={}, history=history, best_epoch=2, device="cpu", amp_dtype="None",
        train_seconds=4.5, steps=8, plan=EpochPlan(epochs=2, max_epochs=2),
        val_predictions=torch.tensor([0, 1, 1, 1]) if with_predictions else None,
    )  # fmt: skip
    meta = training_metadata(TrainSettings(), result, data, "v1", tmp_path)
    assert meta["val_accuracy"].value == 0.75 and meta["train_images"].value == 2
    assert meta["val_images"].value == 4 and len(meta["history"].records) == 2
    assert meta["train_images_per_second"].value == round(220 / 4.5, 1)
    assert (tmp_path / "training_curves.png").is_file()
    assert ("per_class" in meta) == with_predictions
    assert (tmp_path / "confusion_matrix_val.png").is_file() == with_predictions
    if with_predictions:
        assert "| hat | 1.00 | 0.50 | 2 |" in meta["per_class"].value
