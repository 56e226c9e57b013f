"""Tier 1: the code location loads, with the six assets, the jobs and the documented config."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import dagster as dg
import pytest

from clothing_assets.definitions import defs
from clothing_assets.environment import resources_for
from clothing_assets_tests.support import REPO_ROOT

ROOT = REPO_ROOT
ASSETS = {
    "clothing_dataset_train",
    "clothing_dataset",
    "clothing_train",
    "clothing_test",
    "trained_model",
    "champion_model",
    "clothing_predictions",
    "image_embeddings",
    "near_duplicates",
    "label_issues",
}


def test_defs_load_with_every_asset_in_dependency_order(local_env):
    loaded = defs()
    graph = loaded.resolve_asset_graph()
    assert {k.to_user_string() for k in graph.get_all_asset_keys()} == ASSETS
    upstream = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
    }
    assert upstream["clothing_train"] == {"clothing_dataset_train"}
    assert upstream["clothing_test"] == {"clothing_dataset"}
    assert upstream["trained_model"] == {"clothing_train"}
    assert upstream["champion_model"] == {"trained_model"}
    assert upstream["clothing_predictions"] == {"clothing_test", "champion_model"}
    assert upstream["image_embeddings"] == {
        "clothing_train", "clothing_test", "champion_model", "clothing_predictions"
    }  # fmt: skip
    # the review reads the embeddings; training reads the review's tables without a dependency
    assert upstream["near_duplicates"] == upstream["label_issues"] == {"image_embeddings"}
    jobs = ("sync_catalogs", "train_model", "score_test_images", "promote_model", "everything")
    for job in jobs:
        assert loaded.resolve_job_def(job) is not None
    review = loaded.resolve_job_def("review_images")
    assert {key.to_user_string() for key in review.asset_layer.selected_asset_keys} == {
        "image_embeddings", "near_duplicates", "label_issues"
    }  # fmt: skip


def test_documented_run_config_is_accepted(local_env):
    job = defs().resolve_job_def("everything")
    config = {
        "ops": {
            "trained_model": {
                "config": {
                    "n_epochs": 1,
                    "image_size": 64,
                    "architecture": "resnet18",
                    "weights": "none",
                }
            }
        }
    }
    assert dg.validate_run_config(job, config)
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"ops": {"trained_model": {"config": {"n_epoch": 1}}}})


def test_gpu_recipe_config_file_is_valid(local_env):
    import yaml

    recipe = yaml.safe_load((ROOT / "configs" / "resnet50_gpu.yaml").read_text())
    settings = recipe["ops"]["trained_model"]["config"]
    assert settings["architecture"] == "resnet50" and settings["n_epochs"] == 25
    assert settings["batch_size"] == 64 and settings["base_lr"] == 0.003
    assert dg.validate_run_config(defs().resolve_job_def("everything"), recipe)


def test_every_named_config_is_accepted_by_the_main_job(local_env):
    import yaml

    files = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(files) >= 1
    for path in files:
        assert dg.validate_run_config(
            defs().resolve_job_def("everything"), yaml.safe_load(path.read_text())
        ), path.name


def test_environment_values_are_resolved_at_run_time_not_import(local_env, monkeypatch):
    from clothing_assets.defs.assets.catalog import clothing_test
    from clothing_assets.defs.assets.stages import clothing_dataset

    resources = resources_for()
    database = resources["warehouse"].duckdb.database
    assert isinstance(database, dg.EnvVar) and database.env_var_name == "CLOTHING_DUCKDB_PATH"
    # the variable changes after the definitions were built: the run uses the new value
    moved = local_env.root / "elsewhere" / "moved.duckdb"
    monkeypatch.setenv("CLOTHING_DUCKDB_PATH", str(moved))
    assert dg.materialize([clothing_dataset, clothing_test], resources=resources).success
    assert moved.is_file() and not local_env.duckdb.exists()

    monkeypatch.setenv("CLOTHING_WAREHOUSE", "nonsense")
    with pytest.raises(ValueError, match="CLOTHING_WAREHOUSE='nonsense'"):
        resources_for()


def test_dagster_cli_validates_the_location_declared_once_in_tool_dg(local_env, tmp_path):
    """`dagster` without a target reads pyproject.toml's [tool.dg], the one declaration of the
    code location (no workspace.yaml, no [tool.dagster])."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "dagster" not in pyproject["tool"] and not (ROOT / "workspace.yaml").exists()
    assert pyproject["tool"]["dg"]["project"]["root_module"] == "clothing_assets"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Validation successful for code location clothing_assets" in output


def test_steps_that_could_collide_are_in_pools_limited_to_one(local_env):
    import yaml

    graph = defs().resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert pools["clothing_predictions"] == pools["image_embeddings"] == {"clothing_scoring"}
    assert pools["trained_model"] == {"clothing_training"}
    for key in ("clothing_test", "clothing_train", "champion_model"):
        assert pools[key] == {"clothing_warehouse"}, key
    # a stage observation only reads (a listing, or a directory table's summary)
    assert pools["clothing_dataset"] == pools["clothing_dataset_train"] == set()
    settings = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    with dg.instance_for_test(overrides=settings) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_loading_the_code_location_and_syncing_import_neither_torch_nor_torchvision(local_env):
    """The stage observations, the catalog steps and the sensors use none of it; only training
    and scoring import torch, when they run."""
    code = (
        "import sys; import dagster as dg; import clothing_assets.definitions as d; "
        "from clothing_assets.environment import resources_for; d.defs(); "
        # then a sync of both stages and catalogs, in this process as a run executes it
        "assert dg.materialize(d.all_assets(), resources=resources_for(), selection=["
        "'clothing_dataset_train', 'clothing_train', 'clothing_dataset', 'clothing_test'"
        "]).success; "
        "print(sorted(m for m in ('torch', 'torchvision', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_location_is_the_defs_folder_in_a_checkout_and_in_a_wheel(local_env, monkeypatch):
    """Every definition comes from clothing_assets/defs, loaded by `dg.load_from_defs_folder`
    through pyproject.toml in a checkout, and as the same tree from the package where no
    pyproject.toml sits beside it (an installed wheel)."""
    import clothing_assets.definitions as location

    def names(loaded: dg.Definitions) -> tuple:
        graph = loaded.resolve_asset_graph()
        return (
            {k.to_user_string() for k in graph.get_all_asset_keys()},
            {c.name for c in graph.asset_check_keys},
            {j.name for j in loaded.jobs or []},
            {s.name for s in loaded.sensors or []},
            set(loaded.resources or {}),
        )

    checkout = names(location.defs_folder())
    assert checkout[0] == ASSETS and names(defs()) == checkout
    assert "everything" in checkout[2] and "clothing_automation" in checkout[3]
    monkeypatch.setattr(location, "PACKAGE", local_env.root / "site-packages" / "clothing_assets")
    assert names(location.defs_folder()) == checkout
