"""ml.embeddings: the head's input, L2-normalised, for the project's model families; the same
vector from one forward pass as from `embed_batch`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clothing_assets.ml.embeddings import (
    content_sha256,
    embed_batch,
    embed_with,
    embedding_dimension,
    normalised,
)
from clothing_assets.ml.models import build_model


@pytest.mark.parametrize(
    ("architecture", "dimension"),
    [("resnet18", 512), ("efficientnet_lite0", 1280)],
)
def test_embed_batch_is_the_heads_input_normalised(architecture, dimension):
    torch.manual_seed(0)
    model = build_model(architecture, 3, image_size=32).eval()
    batch = torch.randn(2, 3, 32, 32)
    embeddings = embed_batch(model, batch)
    assert embeddings.shape == (2, dimension) == (2, embedding_dimension(model))
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    # the head applied to the (unnormalised) features gives the model's logits: it is the input
    captured = {}
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    head.register_forward_pre_hook(lambda _m, inputs: captured.setdefault("x", inputs[0]))
    with torch.inference_mode():
        logits = model(batch)
    features = captured["x"]
    np.testing.assert_allclose(normalised(features), embeddings, rtol=1e-4, atol=1e-6)
    with torch.inference_mode():
        torch.testing.assert_close(head(features), logits)


def test_embed_with_gives_the_first_pass_and_its_output():
    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    batch = torch.randn(3, 3, 32, 32)

    def two_views() -> torch.Tensor:
        with torch.inference_mode():
            return model(batch) + model(batch.flip(3))

    output, embeddings = embed_with(model, two_views)
    assert output.shape == (3, 3)
    np.testing.assert_allclose(embeddings, embed_batch(model, batch), rtol=1e-5, atol=1e-6)
    assert not np.allclose(embeddings, embed_batch(model, batch.flip(3)))


def test_normalised_keeps_zero_rows_and_hash_is_of_bytes():
    out = normalised(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert content_sha256(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
