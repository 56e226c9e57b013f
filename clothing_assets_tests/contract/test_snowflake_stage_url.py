"""`CREATE STAGE IF NOT EXISTS` keeps a stage's old URL when the
configured one changes; the stage asset must then fail, not list the old location. On
fakesnow, which runs CREATE STAGE and SHOW STAGES for real."""

from __future__ import annotations

import dagster as dg
import fakesnow
import pytest

from clothing_assets_tests.support import make_stage
from clothing_assets_tests.support.fakesnow_warehouse import (
    NOP_REGEXES,
    FakesnowWarehouse,
    fake_connection,
)


@pytest.fixture
def warehouse():
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        yield FakesnowWarehouse(snowflake=fake_connection(), storage_integration="INTEG")


def test_a_stage_whose_url_changed_fails_naming_both_urls_and_the_fix(warehouse, tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    make_stage(old, 1, classes=("hat", "shoes"))
    make_stage(new, 2, classes=("hat", "shoes"))
    warehouse.create_stage("s", str(old))
    warehouse.create_stage("s", str(old) + "/")  # the same location: no error
    with pytest.raises(dg.Failure) as failed:
        warehouse.create_stage("s", str(new))
    message = failed.value.description
    assert "stage s" in message and str(old) in message and str(new) in message
    assert "ALTER STAGE s SET URL" in message and "DROP STAGE s" in message


def test_the_url_mismatch_message_hides_credentials(warehouse):
    warehouse.create_stage("s", "https://olduser:oldtoken@example.invalid/images")
    with pytest.raises(dg.Failure) as failed:
        warehouse.create_stage("s", "https://newuser:newtoken@example.invalid/images")
    message = failed.value.description
    assert "example.invalid/images" in message
    for secret in ("olduser", "oldtoken", "newuser", "newtoken"):
        assert secret not in message
