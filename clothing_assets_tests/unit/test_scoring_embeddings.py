"""score_batch with `embed`: each scored file's embedding and the SHA-256 of the bytes read,
from the same read and the same forward pass, on the torch and the int8 runtime."""

from __future__ import annotations

import hashlib

import pytest

from clothing_assets.ml.embeddings import embed_batch, embedding_rows
from clothing_assets.ml.images import prepare
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.phash import image_hashes
from clothing_assets.ml.scoring import score_batch
from clothing_assets.stage import stage_file_url
from clothing_assets_tests.support import COLOURS, write_image
from clothing_assets_tests.support.models import tiny_model


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("embed-stage")
    paths = [write_image(root / "hat" / f"h{i}.jpg", COLOURS["hat"], seed=i) for i in range(3)]
    (root / "hat" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    rows = []
    for path in [*paths, root / "hat" / "broken.jpg"]:
        relative = str(path.relative_to(root))
        rows.append({"RELATIVE_PATH": relative, "URL": stage_file_url(str(root), relative),
                     "SIZE": path.stat().st_size, "LAST_MODIFIED": None, "ETAG": None})  # fmt: skip
    return root, rows


def test_embed_gives_each_file_its_embedding_and_hash_from_one_read(files):
    root, rows = files
    model_bytes, version = tiny_model()
    results = score_batch(model_bytes, version, rows, embed=True)
    model_file = ModelFile.load(model_bytes)
    model = model_file.build()
    for result in results[:3]:
        data = (root / result["RELATIVE_PATH"]).read_bytes()
        assert result["CONTENT_SHA256"] == hashlib.sha256(data).hexdigest()
        assert result["TYPE"] is not None and result["EMBEDDING"].shape == (512,)
        decoded = prepare(data, model_file.cache_size)[None]
        alone = embed_batch(model, model_file.eval_preset()(decoded))[0]
        assert float(result["EMBEDDING"] @ alone) > 0.99  # autocast may round a little
        # the perceptual hashes of the decode the model saw
        whole, centre = image_hashes(decoded)
        assert (result["PHASH"], result["PHASH_CENTER"]) == (int(whole[0]), int(centre[0]))
    broken = results[3]
    assert broken["ERROR"] and broken["EMBEDDING"] is None and broken["CONTENT_SHA256"]
    assert broken["PHASH"] is None and broken["PHASH_CENTER"] is None
    made = embedding_rows(results, "test")
    assert [r["STAGE"] for r in made] == ["test"] * 4
    assert made[3]["ERROR"] == broken["ERROR"] and made[3]["EMBEDDING"] is None
    assert made[0]["PHASH"] == results[0]["PHASH"] and made[3]["PHASH"] is None
    assert all(r["ERROR"] is None for r in made[:3])
    assert "EMBEDDING" not in score_batch(model_bytes, version, rows[:1])[0]  # only when asked


def test_only_the_torch_runtime_embeds(files):
    """The int8 ONNX graph answers logits alone: asked to embed, it refuses before reading."""
    from clothing_assets.ml.runtime import ORT_INT8

    _, rows = files
    model_bytes, version = tiny_model()
    with pytest.raises(ValueError, match="embedding needs the torch runtime"):
        score_batch(model_bytes, version, rows[:1], embed=True, runtime=ORT_INT8)


def test_embedding_alone_leaves_out_the_mirrored_pass(files):
    """Embeddings without classifying: one forward pass per batch instead of two, the same
    embeddings, and no TYPE or CONFIDENCE to be mistaken for the two-view prediction."""
    import torch

    from clothing_assets.ml.scoring import classify_and_embed

    root, rows = files
    model_bytes, version = tiny_model()
    model_file = ModelFile.load(model_bytes)
    assert model_file.eval_flip  # the default: scored with the mirror image
    both = score_batch(model_bytes, version, rows, embed=True)
    alone = score_batch(model_bytes, version, rows, embed=True, classify=False)
    for full, only in zip(both[:3], alone[:3], strict=True):
        assert only["TYPE"] is None and only["CONFIDENCE"] is None and only["ERROR"] is None
        assert float(full["EMBEDDING"] @ only["EMBEDDING"]) > 0.9999
        assert (only["PHASH"], only["CONTENT_SHA256"]) == (full["PHASH"], full["CONTENT_SHA256"])
    assert alone[3]["ERROR"] == both[3]["ERROR"] and alone[3]["EMBEDDING"] is None

    model, passes = model_file.build().eval(), []
    model.register_forward_hook(lambda _module, inputs, _out: passes.append(inputs[0].shape))
    images = [prepare((root / r["RELATIVE_PATH"]).read_bytes(), model_file.cache_size)
              for r in rows[:3]]  # fmt: skip
    for mirrored, expected in ((True, 2), (False, 1)):
        passes.clear()
        classify_and_embed(model, model_file, images, torch.device("cpu"), None, embed=True,
                           mirrored=mirrored)  # fmt: skip
        assert len(passes) == expected and passes[0][0] == 3
    with pytest.raises(ValueError, match="neither classify nor embed"):
        score_batch(model_bytes, version, rows[:1], classify=False)
