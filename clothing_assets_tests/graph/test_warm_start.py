"""Warm-start retraining (`trained_model`'s `init: champion`): the run starts from the
champion's weights when the classes are the same, refuses a champion of other classes, starts
as `weights` says when there is no champion, and the challenger is still compared with the
champion on its own validation rows. A scheduled retrain (a run the automation sensor launched)
starts from the champion by default, within its own budget, and falls back rather than fails.
Real DuckDB, model store and Dagster runs."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
import pytest
import torch

from clothing_assets.defs.assets.model import TrainConfig
from clothing_assets.defs.assets.warm_start import Start, WarmStartRefused, resolve_init
from clothing_assets.defs.automation import FROM_AUTOMATION_TAG
from clothing_assets.ml.model_file import ModelFile
from clothing_assets.ml.models import build_model
from clothing_assets.ml.settings import TrainSettings
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    TINY_TRAINING,
    materialize,
    metadata_of,
    register_model,
    step_failure,
    write_image,
)

# lr 0 and no weight decay: the weights a run ends with are the weights it started from
FROZEN = {**TINY_TRAINING, "init": "champion", "base_lr": 0.0, "weight_decay": 0.0,
          "max_train_minutes": 0.0}  # fmt: skip


def always_hat(classes=CLASSES) -> bytes:
    """A resnet18 file at 32 px (seeded random body) whose head answers the first class for
    every image: its accuracy on a set of rows is the share of that class in them."""
    torch.manual_seed(7)
    model = build_model("resnet18", len(classes), weights="none")
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([10.0] + [0.0] * (len(classes) - 1)))
    settings = TrainSettings(architecture="resnet18", image_size=32)
    return ModelFile.of_training(model.state_dict(), classes, settings).to_bytes()


def parameters(data: bytes) -> dict[str, torch.Tensor]:
    """The trainable parameters of a model file (batch-norm statistics left out: they follow
    the batches even at learning rate 0)."""
    model_file = ModelFile.load(data)
    names = {n for n, _ in model_file.build().named_parameters()}
    return {n: t for n, t in model_file.state_dict.items() if n in names}


def stored(env, version: str) -> bytes:
    return (env.models / "versions" / f"{version}.pt").read_bytes()


def models(env) -> pd.DataFrame:
    """The registry's rows, by version."""
    with duckdb.connect(str(env.duckdb), read_only=True) as conn:
        return conn.execute("SELECT * FROM clothing_models").df().set_index("VERSION")


def run(config: dict, selection=("trained_model",), **kwargs) -> dg.ExecuteInProcessResult:
    return materialize(
        list(selection), dg.RunConfig(ops={"trained_model": {"config": config}}), **kwargs
    )


def scheduled(config: dict) -> dg.ExecuteInProcessResult:
    """`trained_model` as the automation sensor launches it (its tag), with `config`."""
    return run(config, tags={FROM_AUTOMATION_TAG: "true"})


# TINY_TRAINING without `weights`: a scheduled retrain's config gives neither init nor weights
UNCONFIGURED = {k: v for k, v in TINY_TRAINING.items() if k != "weights"}


def test_same_classes_start_from_the_champion_and_compare_on_the_same_rows(local_env):
    """14 more hats (20 hats, 6 pants, 6 shoes): the validation split holds 2 hats of 4 rows
    (0.5), the training split 18 of 28 (0.64), so an always-hat champion scores exactly 0.5
    only when it is measured on the challenger's validation rows."""
    for i in range(6, 20):
        write_image(local_env.train / "hat" / f"hat_{i}.jpg", COLOURS["hat"], seed=900 + i)
    assert materialize(["clothing_dataset_train", "clothing_train"], None).success
    champion = register_model(local_env, always_hat())

    result = run(FROZEN, ("trained_model", "champion_model"))
    assert result.success, step_failure(result)
    meta = metadata_of(result, "trained_model")
    assert (meta["init"], meta["init_version"]) == ("champion", champion)
    challenger = meta["version"]
    started, ended = (
        parameters(stored(local_env, champion)),
        parameters(stored(local_env, challenger)),
    )
    # a run that ignored the champion would start from `weights: none` under seed 0, not from
    # always_hat's seed-7 body, and end elsewhere
    assert started.keys() == ended.keys() and len(started) > 50
    assert all(torch.equal(started[n], ended[n]) for n in started)

    row = models(local_env).loc[challenger]
    assert row["COMPARED_WITH"] == champion and row["VAL_ROWS"] == 4
    assert row["CHAMPION_VAL_ACCURACY"] == pytest.approx(0.5)
    assert row["VAL_ACCURACY"] == pytest.approx(0.5)  # the same head, the same rows


def test_a_champion_of_other_classes_is_refused_naming_them(local_env):
    assert materialize(["clothing_dataset_train", "clothing_train"], None).success
    register_model(local_env, always_hat(("hat", "pants", "skirt")))
    result = run(FROZEN)
    assert not result.success
    message = step_failure(result).message
    assert "new in the catalog: shoes" in message and "no longer in the catalog: skirt" in message
    assert "init: imagenet" in message
    assert len(models(local_env)) == 1  # nothing registered


def test_without_a_champion_the_run_starts_as_weights_says_and_records_it(local_env):
    result = run(FROZEN, ("clothing_dataset_train", "clothing_train", "trained_model"))
    assert result.success, step_failure(result)
    meta = metadata_of(result, "trained_model")
    assert (meta["init"], meta["init_asked"], meta["init_version"]) == ("none", "champion", "none")
    assert "no champion yet" in meta["init_note"]


@pytest.mark.parametrize(
    ("init", "weights", "given", "expected"),
    [
        ("imagenet", "none", {"weights"}, "none"),  # `weights` alone keeps its meaning
        ("imagenet", "imagenet", set(), "imagenet"),
        ("champion", "none", {"init", "weights"}, "champion"),
        ("none", "none", {"init", "weights"}, "none"),
    ],
)
def test_init_and_weights_resolve(init, weights, given, expected):
    got = resolve_init(init, weights, init_given="init" in given, weights_given="weights" in given)
    assert got == expected


def test_contradicting_init_and_weights_are_refused():
    with pytest.raises(WarmStartRefused, match="disagree"):
        resolve_init("imagenet", "none", init_given=True, weights_given=True)
    with pytest.raises(WarmStartRefused, match="one of champion, imagenet, none"):
        resolve_init("scratch", "none", init_given=True, weights_given=False)


def test_a_scheduled_retrain_starts_from_the_champion_within_its_own_budget(local_env):
    assert materialize(["clothing_dataset_train", "clothing_train"], None).success
    champion = register_model(local_env, always_hat())
    config = {**UNCONFIGURED, "base_lr": 0.0, "weight_decay": 0.0, "champion_train_minutes": 0.2}
    result = scheduled(config)
    assert result.success, step_failure(result)
    meta = metadata_of(result, "trained_model")
    assert (meta["init"], meta["init_asked"], meta["init_version"]) == (
        "champion", "champion", champion,
    )  # fmt: skip
    assert meta["config"]["max_train_minutes"] == 0.2
    ended = parameters(stored(local_env, meta["version"]))
    assert all(torch.equal(t, ended[n]) for n, t in parameters(always_hat()).items())


def test_a_scheduled_retrain_over_other_classes_starts_from_imagenet_and_says_why(local_env):
    """The fallback is the run's `weights`: Lite0's ImageNet weights, installed with it."""
    assert materialize(["clothing_dataset_train", "clothing_train"], None).success
    lite = TrainSettings(architecture="efficientnet_lite0", image_size=32)
    other = build_model("efficientnet_lite0", 3, weights="none", image_size=32)
    register_model(
        local_env, ModelFile.of_training(other.state_dict(), ["hat", "pants", "skirt"], lite)
        .to_bytes()
    )  # fmt: skip
    result = scheduled({**UNCONFIGURED, "architecture": "efficientnet_lite0"})
    assert result.success, step_failure(result)
    meta = metadata_of(result, "trained_model")
    assert (meta["init"], meta["init_asked"], meta["init_version"]) == (
        "imagenet", "champion", "none",
    )  # fmt: skip
    assert "no longer in the catalog: skirt" in meta["init_note"]
    assert meta["config"]["max_train_minutes"] == TrainSettings.max_train_minutes  # a full run


@pytest.mark.parametrize(
    ("given", "retrain_init", "scheduled_run", "expected"),
    [
        ({}, None, True, "champion"),  # CLOTHING_RETRAIN_INIT's default
        ({}, "imagenet", True, "imagenet"),
        ({}, None, False, "imagenet"),  # a run someone launched keeps `init`'s default
        ({"init": "none"}, None, True, "none"),  # a config's choice wins
        ({"weights": "none"}, None, True, "none"),
    ],
)
def test_a_scheduled_retrain_starts_as_its_setting_says(
    monkeypatch, given, retrain_init, scheduled_run, expected
):
    if retrain_init:
        monkeypatch.setenv("CLOTHING_RETRAIN_INIT", retrain_init)
    assert TrainConfig(**given).resolved_init(scheduled=scheduled_run) == expected


@pytest.mark.parametrize(
    ("given", "start", "expected"),
    [
        ({}, Start("champion", "v1"), 2.25),
        ({"champion_train_minutes": 1.0}, Start("champion", "v1"), 1.0),
        ({"max_train_minutes": 3.0}, Start("champion", "v1"), 3.0),  # given: kept
        ({}, Start("imagenet"), TrainSettings.max_train_minutes),
    ],
)
def test_a_run_from_the_champion_trains_within_champion_train_minutes(given, start, expected):
    config = TrainConfig(**given)
    assert config.budgeted(config.settings(), start).max_train_minutes == expected
