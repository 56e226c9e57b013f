"""Tier 2: pure functions, parametrized."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from clothing_assets.ml.cluster import choose_gpu
from clothing_assets.ml.data import downsample, labelled_split, stable_hash, stratified_split
from clothing_assets.ml.images import ImageDecodeError, cache_size, decode_image, decode_images
from clothing_assets.ml.presets import (
    ClassificationPresetEval,
    ClassificationPresetTrain,
    crop_flip_theta,
    crop_params,
)
from clothing_assets.ml.train import build_model, epoch_batches, warmup_cosine
from clothing_assets.plots import confusion_matrix, per_class_scores
from clothing_assets.settings import SettingsError, env_or_default, setting
from clothing_assets.sql import load_sql
from clothing_assets.stage import StageLocationError, class_of, list_stage


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("hat/a.jpg", "hat"),
        ("train/t-shirt/x y.jpg", "t-shirt"),
        ("a.jpg", None),
        ("shoes/été/ß.jpg", "été"),
    ],
)
def test_class_is_the_lowest_folder(path, expected):
    assert class_of(path) == expected


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


def test_stable_hash_does_not_depend_on_the_process():
    # fixed expectation: sha1-based, unlike Python's salted hash()
    assert stable_hash("hat/a.jpg") == int.from_bytes(
        __import__("hashlib").sha1(b"hat/a.jpg").digest()[:8], "big"
    )


def _encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


RGB = Image.fromarray(np.full((20, 30, 3), 128, np.uint8))


@pytest.mark.parametrize(
    "data",
    [
        _encode(RGB, "JPEG"),
        _encode(RGB, "PNG"),
        _encode(RGB.convert("L"), "JPEG"),
        _encode(RGB.convert("CMYK"), "JPEG"),
        _encode(RGB.convert("RGBA"), "PNG"),
        _encode(RGB, "WEBP"),
        _encode(RGB.convert("P"), "GIF"),
        _encode(Image.fromarray(np.full((20, 30), 40000, np.uint16)), "PNG"),
    ],
    ids=["jpeg", "png", "gray-jpeg", "cmyk-jpeg", "rgba-png", "webp", "gif", "16-bit-png"],
)
def test_decode_image_gives_rgb_uint8(data):
    image = decode_image(data)
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 20, 30)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"\x00\x01garbage" * 50, "not an image"),
        (_encode(RGB, "JPEG")[:60], "corrupt image"),
    ],
    ids=["empty", "random-bytes", "truncated-jpeg"],
)
def test_decode_image_rejects_bad_files_with_one_line(data, reason):
    with pytest.raises(ImageDecodeError, match=reason) as info:
        decode_image(data)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("image_size", [32, 128, 224])
def test_presets_give_normalized_channels_last_batches(image_size):
    side = cache_size(image_size)
    batch = torch.randint(0, 256, (4, 3, side, side), dtype=torch.uint8)
    train = ClassificationPresetTrain(crop_size=image_size)(batch, torch.Generator().manual_seed(0))
    again = ClassificationPresetTrain(crop_size=image_size)(batch, torch.Generator().manual_seed(0))
    evaluated = ClassificationPresetEval(crop_size=image_size)(batch)
    for out in (train, evaluated):
        assert out.shape == (4, 3, image_size, image_size) and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(train, again)  # augmentation depends only on the generator


@pytest.mark.parametrize(
    ("side", "crop", "flip"), [(147, 128, False), (147, 128, True), (64, 32, False)]
)
def test_batched_crop_matches_torchvision_resized_crop(side, crop, flip):
    """The one-kernel crop samples exactly where torchvision's crop-then-resize does (inside
    the box; at its edge grid_sample may read the neighbouring pixel instead of repeating)."""
    import torchvision.transforms.v2.functional as TF

    batch = torch.randint(0, 256, (6, 3, side, side), dtype=torch.uint8)
    preset = ClassificationPresetTrain(
        crop_size=crop, mean=(0, 0, 0), std=(1 / 255, 1 / 255, 1 / 255),
        hflip_prob=1.0 if flip else 0.0,
    )  # fmt: skip
    out = preset(batch, torch.Generator().manual_seed(3))
    boxes = torch.Generator().manual_seed(3)
    for image, got in zip(batch, out, strict=True):
        top, left, h, w = crop_params(side, side, preset.scale, (3 / 4, 4 / 3), boxes)
        torch.rand((), generator=boxes)  # the flip draw
        want = TF.resized_crop(image.float(), top, left, h, w, [crop, crop], antialias=False)
        if flip:
            want = TF.horizontal_flip(want)
        assert torch.allclose(got[:, 1:-1, 1:-1], want[:, 1:-1, 1:-1], atol=1e-2)


@pytest.mark.parametrize("smallest", [0.25, 0.5, 0.9])
def test_random_crops_cover_at_least_the_smallest_area(smallest):
    gen = torch.Generator().manual_seed(2)
    preset = ClassificationPresetTrain(crop_size=32, scale=(smallest, 1.0))
    for _ in range(50):
        _top, _left, h, w = crop_params(100, 100, preset.scale, (3 / 4, 4 / 3), gen)
        # crop_params rounds each side, so the area may fall short by about one pixel row
        assert h * w >= smallest * 100 * 100 - 2 * 100


@pytest.mark.parametrize("scale", [(0.0, 1.0), (0.6, 0.5), (0.5, 1.5), (-0.1, 1.0)])
def test_a_crop_scale_outside_the_image_is_refused(scale):
    with pytest.raises(ValueError, match="crop_scale_min"):
        ClassificationPresetTrain(crop_size=32, scale=scale)


def test_crop_flip_theta_identity_box():
    """A whole-image box without flip is the identity matrix; with flip, x is mirrored."""
    theta = crop_flip_theta(1, 10, 10, (1.0, 1.0), (1.0, 1.0), 0.0, torch.Generator())
    assert torch.allclose(theta[0], torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    theta = crop_flip_theta(1, 10, 10, (1.0, 1.0), (1.0, 1.0), 1.0, torch.Generator())
    assert torch.allclose(theta[0], torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]))


@pytest.mark.parametrize(("h", "w"), [(147, 147), (40, 300), (10, 10)])
def test_crop_params_stay_inside_the_image(h, w):
    gen = torch.Generator().manual_seed(1)
    for _ in range(50):
        top, left, ch, cw = crop_params(h, w, (0.25, 1.0), (3 / 4, 4 / 3), gen)
        assert top >= 0 and left >= 0 and top + ch <= h and left + cw <= w and ch > 0 and cw > 0


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


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_build_model_has_one_output_per_class(arch):
    model = build_model(arch, 7).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)


def test_build_model_names_the_problem_for_an_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet1'"):
        build_model("resnet1", 3)


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


def test_confusion_matrix_and_scores():
    counts = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert counts.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    precision, recall = per_class_scores(counts)
    assert precision[1] == pytest.approx(2 / 3) and recall[0] == pytest.approx(0.5)
    assert math.isnan(precision[2])


@pytest.mark.parametrize("bad", ["../etc/passwd", "DROP TABLE x", "merge;catalog", ""])
def test_load_sql_refuses_anything_but_a_plain_name(bad):
    with pytest.raises(ValueError):
        load_sql("duckdb", bad)


def test_every_duckdb_statement_is_one_statement():
    import duckdb

    from clothing_assets.sql import sql_names

    names = sql_names("duckdb")
    assert len(names) >= 15
    for name in names:
        statements = duckdb.extract_statements(load_sql("duckdb", name))
        assert len(statements) == 1, name


@pytest.mark.parametrize("set_it", [True, False])
def test_env_or_default(monkeypatch, set_it):
    if set_it:
        monkeypatch.setenv("CLOTHING_DUCKDB_PATH", "elsewhere.duckdb")
        assert env_or_default("CLOTHING_DUCKDB_PATH").env_var_name == "CLOTHING_DUCKDB_PATH"
    else:
        monkeypatch.delenv("CLOTHING_DUCKDB_PATH", raising=False)
        assert env_or_default("CLOTHING_DUCKDB_PATH") == "data/clothing.duckdb"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [("CLOTHING_KEEP_MODELS", "", 5), ("CLOTHING_KEEP_MODELS", "0", 0),
     ("CLOTHING_MIN_VAL_ACCURACY", " 0.7 ", 0.7), ("CLOTHING_DASK_WORKERS", "3", 3),
     ("CLOTHING_KEEP_MODELS", "-1", SettingsError), ("CLOTHING_DASK_WORKERS", "0", SettingsError),
     ("CLOTHING_MIN_VAL_ACCURACY", "high", SettingsError),
     ("CLOTHING_HTTP_DEADLINE_SECONDS", "0", SettingsError)],
)  # fmt: skip
def test_settings_parse_or_name_the_variable(monkeypatch, name, raw, expected):
    monkeypatch.setenv(name, raw)
    if expected is SettingsError:
        with pytest.raises(SettingsError, match=f"^{name}="):
            setting(name)
    else:
        assert setting(name) == expected


def test_a_secret_setting_is_never_echoed(monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_LOGIN_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="'soon'"):
        setting("SNOWFLAKE_LOGIN_TIMEOUT")
    with pytest.raises(KeyError, match="not a setting"):
        setting("CLOTHING_NO_SUCH_THING")


def test_list_stage_reports_files_and_skips_hidden(tmp_path):
    (tmp_path / "hat").mkdir()
    (tmp_path / "hat" / "a.jpg").write_bytes(b"123")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b.jpg").write_bytes(b"1")
    (tmp_path / "hat" / ".DS_Store").write_bytes(b"1")
    listing = list_stage(str(tmp_path))
    assert listing["RELATIVE_PATH"].tolist() == ["hat/a.jpg"]
    assert listing["SIZE"].tolist() == [3]
    assert listing["FILE_URL"].iloc[0].startswith("file://")
    assert listing["LAST_MODIFIED"].notna().all()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_list_stage_errors_name_the_variable(tmp_path, kind):
    target = tmp_path / "nope"
    if kind == "file":
        target.write_text("x")
    with pytest.raises(StageLocationError, match="Set CLOTHING_TEST_STAGE_URL"):
        list_stage(str(target), env_var="CLOTHING_TEST_STAGE_URL")


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kinds",
    [
        ["jpeg"],
        ["jpeg", "png", "garbage", "jpeg-gray", "empty", "cmyk"],
        ["garbage"],
        [],
    ],
)
def test_decode_images_agrees_with_decode_image_file_by_file(kinds):
    blobs = {
        "jpeg": _encoded("JPEG"),
        "png": _encoded("PNG"),
        "jpeg-gray": _encoded("JPEG", "L"),
        "cmyk": _encoded("JPEG", "CMYK"),
        "garbage": b"not an image at all",
        "empty": b"",
    }
    data = [blobs[k] for k in kinds]
    out = decode_images(data, device="cpu")
    assert len(out) == len(data)
    for blob, got in zip(data, out, strict=True):
        try:
            want = decode_image(blob)
        except ImageDecodeError as exc:
            assert isinstance(got, ImageDecodeError) and str(got) == str(exc)
        else:
            assert isinstance(got, torch.Tensor) and torch.equal(got, want)
            assert got.shape == (3, 20, 30) and got.dtype == torch.uint8


@pytest.mark.parametrize(
    ("device", "gpu_workers", "expected"),
    [
        ("auto", [], False),
        ("auto", ["tcp://a:1"], True),
        ("cpu", ["tcp://a:1"], False),
        ("cuda", ["tcp://a:1"], True),
        ("cuda", [], "no Dask worker advertises a GPU"),
        ("tpu", [], "must be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_choose_gpu_follows_the_config_and_the_workers(device, gpu_workers, expected):
    if isinstance(expected, str):
        with pytest.raises(Exception, match=expected):
            choose_gpu(device, gpu_workers)
    else:
        assert choose_gpu(device, gpu_workers) is expected


@pytest.mark.parametrize("eval_flip", [False, True])
def test_classify_averages_an_image_and_its_mirror_when_the_model_says_so(eval_flip):
    """With the model's eval_flip, a probability is the mean over the image and its mirror,
    so an image and its mirror get the same answer; without it, one view, as before."""
    from clothing_assets.ml.scoring import classify
    from clothing_assets.ml.train import TrainSettings, model_payload

    torch.manual_seed(0)
    model = build_model("resnet18", 3).eval()
    # 28 px crops of 32 px images: a centred crop with equal margins, so the crop of a mirror
    # image is the mirror of the crop
    settings = TrainSettings(architecture="resnet18", image_size=28, eval_flip=eval_flip)
    payload = model_payload(model.state_dict(), ["a", "b", "c"], settings)
    assert payload["eval_flip"] is eval_flip
    side = payload["cache_size"]
    images = [torch.randint(0, 256, (3, side, side), dtype=torch.uint8) for _ in range(3)]
    mirrors = [image.flip(2) for image in images]
    cpu = torch.device("cpu")
    probs = classify(model, payload, images, cpu, None)
    mirrored = classify(model, payload, mirrors, cpu, None)
    preset = ClassificationPresetEval(crop_size=28)
    with torch.inference_mode():
        one = model(preset(torch.stack(images))).softmax(1)
        other = model(preset(torch.stack(mirrors))).softmax(1)
    torch.testing.assert_close(probs.sum(1), torch.ones(3))
    if eval_flip:
        torch.testing.assert_close(probs, (one + other) / 2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(probs, mirrored, rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(probs, one, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(probs, mirrored, atol=1e-4)  # a random net is not symmetric
