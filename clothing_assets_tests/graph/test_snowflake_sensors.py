"""The stage sensors in Snowflake mode ask the warehouse, never the bucket: each tick refreshes
the stage's directory table (ALTER STAGE ... REFRESH) and reads one summary of it
(`summarize_stage_directory_state`), whose key is the sensor's cursor.

On fakesnow the refresh and DIRECTORY(@stage) are stood in for (fakesnow_warehouse.py: the
stage's folder listed into a table that replaces the relation; the rest of the statement is the
production text, which test_snowflake_warehouse.py also parses as Snowflake SQL). The sensors'
own stage resources point at a location that does not exist: were they listed, every tick
would skip.
"""

from __future__ import annotations

import dagster as dg
import fakesnow
import pytest

from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
from clothing_assets.sensors import build_sensors
from clothing_assets.stage import StageResource
from clothing_assets_tests.support import COLOURS, make_stage, write_image
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)


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


def tick(sensor, cursor, instance, resources):
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={k: resources[k] for k in sensor.required_resource_keys},
    ) as context:
        return sensor(context), context.cursor


def test_the_snowflake_mode_sensor_on_fakesnow_requests_on_change_and_skips_otherwise(
    snowflake_mode,
):
    warehouse, resources, root = snowflake_mode
    _, test_sensor = build_sensors()
    with dg.instance_for_test() as instance:
        # no stage in the warehouse yet: the sync that creates it is requested
        absent, cursor = tick(test_sensor, None, instance, resources)
        assert isinstance(absent, dg.RunRequest), absent
        assert absent.tags["clothing/change"] == "first look: 0 files"

        warehouse.create_stage(TEST_STAGE, str(root))
        first, cursor = tick(test_sensor, cursor, instance, resources)
        assert isinstance(first, dg.RunRequest) and first.tags["clothing/change"] == "4 files (+4)"
        same, cursor = tick(test_sensor, cursor, instance, resources)
        assert isinstance(same, dg.SkipReason) and "no change" in same.skip_message

        write_image(root / "hat" / "added.jpg", COLOURS["hat"], seed=3)
        added, cursor = tick(test_sensor, cursor, instance, resources)
        assert isinstance(added, dg.RunRequest) and "(+1)" in added.tags["clothing/change"]
        assert added.run_key != first.run_key
        again, cursor = tick(test_sensor, cursor, instance, resources)
        assert isinstance(again, dg.SkipReason)

        write_image(root / "shoes" / "shoes_0.jpg", COLOURS["hat"], seed=9, size=50)
        rewritten, cursor = tick(test_sensor, cursor, instance, resources)
        assert isinstance(rewritten, dg.RunRequest)
        assert rewritten.tags["clothing/change"] == "5 files, some changed"


def test_a_fresh_snowflake_mode_sensor_skips_when_the_catalog_holds_the_directory(
    snowflake_mode,
):
    warehouse, resources, root = snowflake_mode
    train_sensor, test_sensor = build_sensors()
    warehouse.create_stage(TEST_STAGE, str(root))
    warehouse.create_stage(TRAIN_STAGE, str(root))
    with dg.instance_for_test() as instance:
        before, _ = tick(test_sensor, None, instance, resources)
        assert isinstance(before, dg.RunRequest)  # the catalog is still empty

        warehouse.sync_catalog("clothing_test", TEST_STAGE)
        warehouse.sync_catalog("clothing_train", TRAIN_STAGE)
        for sensor, table in ((train_sensor, "clothing_train"), (test_sensor, "clothing_test")):
            fresh, cursor = tick(sensor, None, instance, resources)  # the test sensor's last
            assert isinstance(fresh, dg.SkipReason), fresh
            assert f"4 files, all already in {table}" in fresh.skip_message

        (root / "hat" / "hat_0.jpg").unlink()
        removed, _ = tick(test_sensor, cursor, instance, resources)
        assert isinstance(removed, dg.RunRequest) and "(-1)" in removed.tags["clothing/change"]
        behind, _ = tick(test_sensor, None, instance, resources)
        assert isinstance(behind, dg.RunRequest)  # a fresh sensor sees the catalog is behind
