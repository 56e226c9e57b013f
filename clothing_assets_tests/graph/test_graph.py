"""Whole-graph runs with dg.materialize on real local resources: DuckDB, Dask, the filesystem."""

from __future__ import annotations

import dagster as dg
import pytest

from clothing_assets.ml.cpu import KINDS
from clothing_assets.ml.settings import TrainSettings
from clothing_assets_tests.support import (
    CLASSES,
    COLOURS,
    TINY_RUN_CONFIG,
    champion_version,
    materialize,
    metadata_of,
    read_table,
    step_failure,
    write_image,
)


def _materialize(selection: str | list[str] = "*", run_config=TINY_RUN_CONFIG):
    return materialize(selection, run_config, checks=True)


SCORE_ONLY = ["clothing_dataset", "clothing_test", "clothing_predictions"]
TRAIN_ONLY = ["clothing_dataset_train", "clothing_train", "trained_model", "champion_model"]


def test_whole_graph_catalogs_trains_and_scores(local_env):
    result = _materialize()
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    train, test = read_table(local_env, "clothing_train"), read_table(local_env, "clothing_test")
    assert sorted(train["RELATIVE_PATH"]) == sorted(
        str(p.relative_to(local_env.train)) for p in local_env.train.rglob("*.jpg")
    )
    assert len(test) == 3 * len(CLASSES)
    assert train["ERROR"].isna().all() and test["ERROR"].isna().all()
    assert set(test["TYPE"]) <= set(CLASSES)
    assert test["CONFIDENCE"].between(0.0, 1.0).all()
    assert test["MODEL_VERSION"].notna().all() and test["MODEL_VERSION"].nunique() == 1
    assert test["PRED_TIMESTAMP"].notna().all()

    model_meta = metadata_of(result, "trained_model")
    assert model_meta["classes"] == list(CLASSES)
    assert model_meta["version"] == test["MODEL_VERSION"].iloc[0]
    assert (local_env.models / "versions" / f"{model_meta['version']}.pt").is_file()
    assert champion_version(local_env) == model_meta["version"]
    assert not list(local_env.cache.glob("checkpoint*.pt"))
    # the metadata says the training budget, the epochs it chose and the CPU kind it measured on
    assert model_meta["train_budget_minutes"] == TrainSettings().max_train_minutes
    assert model_meta["planned_epochs"] == model_meta["epochs"] == 1  # the tiny config's n_epochs
    assert "fits all n_epochs" in model_meta["epoch_plan"]
    assert model_meta["measured_train_images_per_second"] > 0
    assert model_meta["cpu_kind"] in KINDS
    pred_meta = metadata_of(result, "clothing_predictions")
    assert pred_meta["rows_scored"] == len(test)
    assert 0.0 <= pred_meta["accuracy"] <= 1.0
    assert sum(pred_meta["per_worker"].values()) == len(test)
    for name, frame in (("clothing_train", train), ("clothing_test", test)):
        schema = metadata_of(result, name)["dagster/column_schema"]
        assert [c.name for c in schema.columns] == list(frame.columns)  # the UI's Columns tab
    stage_meta = metadata_of(result, "clothing_dataset_train")
    assert stage_meta["file_count"] == 6 * len(CLASSES)

    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert len(checks) == 9 and "challenger_promoted" in checks
    for name, evaluation in checks.items():
        # a one-epoch model's class mix may well drift, and the generated stages' images of a
        # class are one colour, so train and test hold near-copies: those checks only have to run
        assert evaluation.passed or name in ("predicted_class_mix_drift", "no_train_test_leakage")


def test_the_default_model_trains_from_installed_weights_and_scores_on_dask(local_env):
    """The default architecture, EfficientNet-Lite0 from the ImageNet weights its package
    installs (no download), through the whole graph: trained, registered, and rebuilt from its
    model file on the Dask workers that score the test stage."""
    tiny = {"image_size": 32, "n_epochs": 1, "batch_size": 8, "checkpoint_every": 0}
    result = _materialize(run_config=dg.RunConfig(ops={"trained_model": {"config": tiny}}))
    assert result.success, [e.message for e in result.all_events if e.is_failure]

    model_meta = metadata_of(result, "trained_model")
    assert (model_meta["architecture"], model_meta["weights"]) == ("efficientnet_lite0", "imagenet")
    test = read_table(local_env, "clothing_test")
    assert test["ERROR"].isna().all() and set(test["TYPE"]) <= set(CLASSES)
    assert (test["MODEL_VERSION"] == model_meta["version"]).all()


def test_rematerializing_duplicates_and_rescores_nothing(local_env):
    assert _materialize().success
    before = read_table(local_env, "clothing_test")

    # again, model untouched: no duplicate rows and no row rescored
    again = _materialize(SCORE_ONLY, None)
    assert again.success
    after = read_table(local_env, "clothing_test")
    assert len(after) == len(before)
    assert (after["PRED_TIMESTAMP"] == before["PRED_TIMESTAMP"]).all()
    idle = metadata_of(again, "clothing_predictions")
    assert idle["rows_scored"] == 0 and "images_per_second" not in idle  # no zeros plotted
    assert "dask_dashboard" not in idle  # nothing to score: no cluster was started
    assert 0.0 <= idle["accuracy"] <= 1.0  # the table's state is still reported
    assert metadata_of(again, "clothing_test")["inserted"] == 0

    # a new file is the only row scored; a removed file's row is gone
    write_image(local_env.test / "hat" / "new hat.jpg", COLOURS["hat"], seed=7)
    removed = next((local_env.test / "pants").glob("*.jpg"))
    removed.unlink()
    third = _materialize(SCORE_ONLY, None)
    assert third.success
    final = read_table(local_env, "clothing_test")
    assert metadata_of(third, "clothing_predictions")["rows_scored"] == 1
    assert "hat/new hat.jpg" in set(final["RELATIVE_PATH"])
    assert str(removed.relative_to(local_env.test)) not in set(final["RELATIVE_PATH"])
    assert len(final) == len(before)  # one in, one out
    kept = final.merge(before, on="RELATIVE_PATH", suffixes=("", "_before"))
    assert (kept["PRED_TIMESTAMP"] == kept["PRED_TIMESTAMP_before"]).all()
    assert final["TYPE"].notna().all()


@pytest.mark.parametrize(
    ("variable", "selection"),
    [
        ("CLOTHING_TRAIN_STAGE_URL", "clothing_dataset_train"),
        ("CLOTHING_TEST_STAGE_URL", "clothing_dataset"),
    ],
)
def test_missing_stage_fails_naming_the_variable(local_env, monkeypatch, variable, selection):
    monkeypatch.setenv(variable, str(local_env.root / "no-such-folder"))
    result = _materialize(selection, None)
    assert not result.success
    message = step_failure(result).message
    assert "no-such-folder" in message and variable in message


def test_a_rerun_trains_from_the_decode_cache_until_a_file_changes(local_env):
    def train() -> dict:
        result = _materialize(TRAIN_ONLY)
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        return metadata_of(result, "trained_model")

    (local_env.train / "pants" / "broken.jpg").write_bytes(b"not a jpeg")
    first = train()
    assert first["decode_cache"] == "miss" and first["rows_with_error"] == 1
    # no stage file is read: the same pixels, so the same model; the broken file, recorded in
    # clothing_train.ERROR by the first run, is not part of the cached set
    second = train()
    assert second["decode_cache"] == "hit" and second["version"] == first["version"]
    assert second["rows_with_error"] == 1

    # a changed file changes its catalog row, so the cached set no longer applies
    write_image(local_env.train / "hat" / "hat_0.jpg", COLOURS["hat"], seed=4242, size=48)
    assert train()["decode_cache"] == "miss"
    assert train()["decode_cache"] == "hit"

    # a torn cache file is a miss, decoded again, never a failure
    (local_env.cache / "decoded_train.pt").write_bytes(b"torn")
    assert train()["decode_cache"] == "miss"
