"""The automation where runs and stage changes overlap: a file that lands while its catalog
is being synced is still synced (the sync records the stage version it actually read, so the
observer's next look differs from it), nothing is requested while a run of the asset is in
flight, and the predictions are not requested without a champion to score with."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG

from clothing_assets.defs.automation import NO_CHAMPION
from clothing_assets.defs.sensors import recorded_version
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE
from clothing_assets.resources.duckdb_warehouse import DuckDBWarehouse
from clothing_assets_tests.support import COLOURS, read_table, register_model, write_image
from clothing_assets_tests.support.automation import Automation


def test_a_file_added_while_its_catalog_syncs_is_synced_next(local_env, monkeypatch):
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        auto.observe()
        assert auto.run(auto.evaluate()).success
        assert auto.evaluate() == set()

        write_image(local_env.test / "hat" / "first.jpg", COLOURS["hat"], seed=21)
        auto.observe()
        assert auto.evaluate() == {"clothing_test"}
        seen_in_flight: list[set[str]] = []
        real_sync = DuckDBWarehouse.sync_catalog

        def sync_then_a_file_lands(self, table, stage):
            # the sync has read the listing; a file lands, the observer records it and the
            # automation evaluates while this run is still in flight
            result = real_sync(self, table, stage)
            write_image(local_env.test / "hat" / "late.jpg", COLOURS["hat"], seed=22)
            auto.observe()
            seen_in_flight.append(auto.evaluate())
            return result

        monkeypatch.setattr(DuckDBWarehouse, "sync_catalog", sync_then_a_file_lands)
        assert auto.run({"clothing_test"}).success
        monkeypatch.setattr(DuckDBWarehouse, "sync_catalog", real_sync)
        assert seen_in_flight == [set()]  # at most one run in flight per asset
        catalog = set(read_table(local_env, "clothing_test")["RELATIVE_PATH"])
        assert "hat/first.jpg" in catalog and "hat/late.jpg" not in catalog

        auto.observe()
        assert auto.evaluate() == {"clothing_test"}
        assert auto.run({"clothing_test"}).success
        assert "hat/late.jpg" in set(read_table(local_env, "clothing_test")["RELATIVE_PATH"])
        assert isinstance(auto.observe(), dg.SkipReason)
        assert auto.evaluate() == set()


def test_a_sync_records_the_stage_version_it_read(local_env):
    """The catalog's data version is the observer's version of the same files, so a sync that
    read the stage as it is leaves the observer nothing to record for that stage."""
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        assert auto.run({"clothing_test"}).success
        synced = recorded_version(instance, dg.AssetKey(TEST_STAGE))
        catalog = instance.get_latest_materialization_event(dg.AssetKey("clothing_test"))
        assert synced is not None
        assert catalog.asset_materialization.tags[DATA_VERSION_TAG] == synced
        observed = auto.observe()  # the train stage, never observed, is recorded
        assert [e.asset_key.to_user_string() for e in observed.asset_events] == [TRAIN_STAGE]
        assert recorded_version(instance, dg.AssetKey(TEST_STAGE)) == synced


def test_no_scoring_run_is_requested_without_a_champion(local_env):
    """champion_model decided with no champion in the registry (none trained, or the only
    challenger rejected): a new catalog row is synced but not scored, since a scoring run
    could only fail; once champion_model records a champion, the rows are scored."""
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        assert auto.evaluate() == set()
        auto.observe()
        assert auto.run({"clothing_train", "clothing_test", "champion_model"}).success
        champion = instance.get_latest_materialization_event(dg.AssetKey("champion_model"))
        assert champion.asset_materialization.tags[DATA_VERSION_TAG] == NO_CHAMPION
        assert auto.evaluate() == set()

        write_image(local_env.test / "hat" / "new.jpg", COLOURS["hat"], seed=23)
        auto.observe()
        assert auto.evaluate() == {"clothing_test"}
        assert auto.run({"clothing_test"}).success
        assert auto.evaluate() == set()

        version = register_model(local_env, b"a registered champion")
        assert auto.run({"champion_model"}).success
        assert auto.evaluate() == {"clothing_predictions"}
        assert version in str(instance.get_latest_materialization_event(
            dg.AssetKey("champion_model")).asset_materialization.tags)  # fmt: skip
