"""`clothing-assets similar IMAGE [-k N]`: the champion's nearest cataloged images, read-only."""

from __future__ import annotations

import pytest
from dagster_duckdb import DuckDBResource

from clothing_assets.cli import main
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets.serve.model import LoadedModel
from clothing_assets_tests.support import register_model
from clothing_assets_tests.support.models import tiny_model_bytes
from clothing_assets_tests.system.test_serve_similar import embed_catalog


@pytest.fixture
def catalog(local_env):
    """The local environment's catalogs and a registered champion; embeddings not yet made."""
    warehouse = DuckDBWarehouse(duckdb=DuckDBResource(database=str(local_env.duckdb)))
    for stage, root, table in (
        (TRAIN_STAGE, local_env.train, "clothing_train"),
        (TEST_STAGE, local_env.test, "clothing_test"),
    ):
        warehouse.create_stage(stage, str(root))
        warehouse.refresh_stage(stage)
        warehouse.sync_catalog(table, stage)
    model_bytes = tiny_model_bytes()
    version = register_model(local_env, model_bytes)
    return warehouse, LoadedModel.from_bytes(version, model_bytes)


def test_similar_prints_the_nearest_images_or_says_what_to_materialize(local_env, catalog, capsys):
    warehouse, loaded = catalog
    image = local_env.train / "pants" / "pants_2.jpg"
    assert main(["similar", str(image)]) == 2
    assert "materialize image_embeddings" in capsys.readouterr().err

    embed_catalog(warehouse, loaded, {"train": local_env.train, "test": local_env.test})
    assert main(["similar", str(image), "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["similarity", "stage", "label", "path"]
    assert len(lines) == 1 + 3
    assert lines[1].split() == ["1.0000", "train", "pants", "pants/pants_2.jpg"]
    similarities = [float(line.split()[0]) for line in lines[1:]]
    assert similarities == sorted(similarities, reverse=True)


@pytest.mark.parametrize("k", ["0", "51", "x"])
def test_a_bad_k_is_one_error_line(capsys, k):
    with pytest.raises(SystemExit) as exit_:
        main(["similar", "any.jpg", "-k", k])
    assert exit_.value.code == 2
    assert "from 1 to 50" in capsys.readouterr().err
