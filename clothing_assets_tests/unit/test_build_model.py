"""Building a classification network by name (ml/models.py, build_model)."""

from __future__ import annotations

import pytest
import torch

from clothing_assets.ml.models import build_model


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_build_model_has_one_output_per_class(arch):
    model = build_model(arch, 7).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_build_model_names_the_problem_for_an_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet1'"):
        build_model("resnet1", 3)
