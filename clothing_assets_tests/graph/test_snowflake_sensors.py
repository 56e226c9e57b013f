"""The stage observer in Snowflake mode asks the warehouse, never the bucket: each tick refreshes
the stage's directory table (ALTER STAGE ... REFRESH) and reads one summary of it
(`summarize_stage_directory_state`), whose key is the stage's data version.

On fakesnow the refresh and DIRECTORY(@stage) are stood in for (fakesnow_warehouse.py: the
stage's folder listed into a table that replaces the relation; the rest of the statement is the
production text, which test_snowflake_warehouse.py also parses as Snowflake SQL). The
observer's own stage resources point at a location that does not exist: were they listed, no
version would be recorded.
"""

from __future__ import annotations

import dagster as dg
import fakesnow
import pytest

from clothing_assets.defs.sensors import build_stage_observer, recorded_version
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
from clothing_assets.stage import StageResource
from clothing_assets_tests.support import COLOURS, make_stage, write_image
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)

STAGES = (TRAIN_STAGE, TEST_STAGE)


@pytest.fixture
def snowflake_mode(tmp_path):
    root = tmp_path / "bucket"
    make_stage(root, 2, classes=("hat", "shoes"))
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        warehouse = FakesnowWarehouse(snowflake=fake_connection(), storage_integration="INTEG")
        nowhere = str(tmp_path / "never-listed")
        resources = {
            "warehouse": warehouse,
            "test_stage": StageResource(name=TEST_STAGE, url=nowhere, env_var="X"),
            "train_stage": StageResource(name=TRAIN_STAGE, url=nowhere, env_var="X"),
        }
        yield warehouse, resources, root


def observe(instance, resources) -> dict[str, str | None]:
    """One tick of the stage observer on `resources`, its observations stored as the daemon
    stores them: each stage's recorded data version afterwards."""
    observer = build_stage_observer()
    with dg.build_sensor_context(
        instance=instance,
        resources={k: resources[k] for k in observer.required_resource_keys},
    ) as context:
        result = observer(context)
    for event in getattr(result, "asset_events", []):
        instance.report_runless_asset_event(event)
    return {name: recorded_version(instance, dg.AssetKey(name)) for name in STAGES}


def test_the_snowflake_mode_observer_on_fakesnow_records_a_version_per_change(snowflake_mode):
    warehouse, resources, root = snowflake_mode
    with dg.instance_for_test() as instance:
        # no stage in the warehouse yet: a version saying so, which the first sync replaces
        absent = observe(instance, resources)
        assert absent[TEST_STAGE] == f"absent:{TEST_STAGE}"

        warehouse.create_stage(TEST_STAGE, str(root))
        first = observe(instance, resources)
        assert first[TEST_STAGE] != absent[TEST_STAGE]
        assert first[TRAIN_STAGE] == absent[TRAIN_STAGE]
        count = len(instance.fetch_observations(dg.AssetKey(TEST_STAGE), limit=10).records)
        assert observe(instance, resources) == first  # no change: nothing recorded
        assert len(instance.fetch_observations(dg.AssetKey(TEST_STAGE), limit=10).records) == count

        write_image(root / "hat" / "added.jpg", COLOURS["hat"], seed=3)
        added = observe(instance, resources)
        assert added[TEST_STAGE] not in (first[TEST_STAGE], absent[TEST_STAGE])
        assert observe(instance, resources) == added

        write_image(root / "shoes" / "shoes_0.jpg", COLOURS["hat"], seed=9, size=50)
        rewritten = observe(instance, resources)
        assert rewritten[TEST_STAGE] != added[TEST_STAGE]
        [latest] = instance.fetch_observations(dg.AssetKey(TEST_STAGE), limit=1).records
        assert latest.asset_observation.metadata["file_count"].value == 5


def test_the_version_is_the_directory_table_summary_the_catalog_is_compared_with(
    snowflake_mode,
):
    """The observer's version is the key the catalog's own summary answers with (the version
    a sync records), so a synced catalog and its observed stage agree, and a removed file
    changes the version."""
    warehouse, resources, root = snowflake_mode
    warehouse.create_stage(TEST_STAGE, str(root))
    with dg.instance_for_test() as instance:
        before = observe(instance, resources)[TEST_STAGE]
        warehouse.sync_catalog("clothing_test", TEST_STAGE)
        assert warehouse.catalog_holds(
            "clothing_test", warehouse.stage_state(resources["test_stage"])
        )
        assert warehouse.stage_state(resources["test_stage"]).key == before
        # the version a sync records, or the automation would sync an unchanged stage again
        assert warehouse.catalog_version("clothing_test") == before

        (root / "hat" / "hat_0.jpg").unlink()
        after = observe(instance, resources)[TEST_STAGE]
        assert after != before
        assert not warehouse.catalog_holds(
            "clothing_test", warehouse.stage_state(resources["test_stage"])
        )
