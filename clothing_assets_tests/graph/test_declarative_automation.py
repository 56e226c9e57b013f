"""The declarative automation on real stages: the stage observer records a new data version
only when files change, and the automation sensor's conditions (evaluated with
`dg.evaluate_automation_conditions`, as the sensor evaluates them) turn a new version into one
catalog sync and one scoring pass, and a cron tick into a retraining."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import yaml

from clothing_assets.definitions import all_assets, defs
from clothing_assets.defs.automation import AUTOMATION_SENSOR, MAX_RUN_RETRIES
from clothing_assets.defs.jobs import JOBS
from clothing_assets.defs.sensors import recorded_version
from clothing_assets.environment import TEST_STAGE, TRAIN_STAGE, resources_for
from clothing_assets_tests.support import (
    COLOURS,
    REPO_ROOT,
    read_table,
    register_model,
    write_image,
)
from clothing_assets_tests.support.automation import Automation
from clothing_assets_tests.support.models import tiny_model


def _stage_versions(instance: dg.DagsterInstance) -> list[str | None]:
    return [recorded_version(instance, dg.AssetKey(k)) for k in (TRAIN_STAGE, TEST_STAGE)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_new_file_leads_to_one_catalog_run_and_one_scoring_run(local_env):
    register_model(local_env, tiny_model()[0])
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        # champion_model as a promotion leaves it; the first evaluation requests nothing
        instance.report_runless_asset_event(dg.AssetMaterialization("champion_model"))
        assert auto.evaluate() == set()

        assert isinstance(auto.observe(), dg.SensorResult)
        assert None not in _stage_versions(instance)
        first = auto.evaluate()
        assert first == {"clothing_train", "clothing_test", "clothing_predictions"}
        assert auto.run(first).success
        assert read_table(local_env, "clothing_test")["MODEL_VERSION"].notna().all()
        assert auto.evaluate() == set()

        write_image(local_env.test / "hat" / "new.jpg", COLOURS["hat"], seed=8)
        before = _stage_versions(instance)
        assert isinstance(auto.observe(), dg.SensorResult)
        after = _stage_versions(instance)
        assert after[0] == before[0] and after[1] != before[1]  # the test stage alone
        requested = auto.evaluate()
        assert requested == {"clothing_test", "clothing_predictions"}
        done = auto.run(requested)
        assert done.success
        events = done.get_asset_materialization_events()
        counts = Counter(e.asset_key.to_user_string() for e in events)
        assert counts == {"clothing_test": 1, "clothing_predictions": 1}
        scored = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
        assert scored.loc["hat/new.jpg", "MODEL_VERSION"] is not None
        assert auto.evaluate() == set()


def test_no_change_records_nothing_and_launches_nothing(local_env):
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        auto.evaluate()
        auto.observe()
        assert auto.run(auto.evaluate()).success
        observations = instance.fetch_observations(dg.AssetKey(TEST_STAGE), limit=10).records
        for _ in range(3):
            quiet = auto.observe()
            assert isinstance(quiet, dg.SkipReason) and "no stage changed" in quiet.skip_message
            assert auto.evaluate() == set()
        assert len(instance.fetch_observations(dg.AssetKey(TEST_STAGE), limit=10).records) == len(
            observations
        )
        assert instance.get_runs_count() == 1  # the first sync's


def test_a_sync_job_records_the_stage_versions_so_the_automation_adds_nothing(local_env):
    """A run of `sync_catalogs` by hand observes the stages it syncs: the observer then has
    no new version to record, and no condition asks for the same sync again."""
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        auto.evaluate()
        loaded = dg.Definitions(assets=all_assets(), resources=resources_for(), jobs=JOBS)
        assert loaded.resolve_job_def("sync_catalogs").execute_in_process(instance=instance).success
        assert None not in _stage_versions(instance)
        assert isinstance(auto.observe(), dg.SkipReason)
        assert auto.evaluate() == set()


def test_a_fresh_instance_syncs_a_missing_catalog_once_its_stage_is_observed(local_env):
    """The first observation may come before the automation's first evaluation: a catalog the
    instance never materialized is synced then, not only at the stage's next change."""
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        auto.observe()
        assert auto.evaluate() == {"clothing_train", "clothing_test"}
        assert auto.run({"clothing_train", "clothing_test"}).success
        assert auto.evaluate() == set()


def test_an_unlistable_stage_is_skipped_with_the_variable_named(local_env, monkeypatch, capfd):
    monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", str(local_env.root / "gone"))
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        result = auto.observe()
        assert isinstance(result, dg.SensorResult)  # the train stage is still observed
        assert _stage_versions(instance)[1] is None
        assert "CLOTHING_TEST_STAGE_URL" in capfd.readouterr().err
        # clothing_test waits for an observation of its stage
        assert auto.evaluate() == {"clothing_train"}


def test_a_rising_cron_tick_requests_trained_model(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_RETRAIN_CRON", "0 3 * * 0")
    start = datetime(2026, 12, 5, 12, tzinfo=UTC)  # a Saturday
    with dg.instance_for_test() as instance:
        auto = Automation(instance)
        auto.observe()
        auto.evaluate(start)
        assert auto.run(auto.evaluate(start + timedelta(minutes=1))).success
        assert auto.evaluate(start + timedelta(hours=14)) == set()  # 02:00 on Sunday
        # the challenger is decided on in the same run; with no champion recorded yet, the
        # scoring waits for champion_model to record one
        assert auto.evaluate(start + timedelta(hours=15, minutes=1)) == {
            "trained_model", "champion_model"
        }  # fmt: skip
        # requested once per tick: the next evaluation waits for the next Sunday
        assert auto.evaluate(start + timedelta(hours=15, minutes=2)) == set()


def sync_test_catalog_job() -> dg.JobDefinition:
    """The run the automation launches for a test-stage change, as a job a re-execution can
    rebuild by name."""
    job = dg.define_asset_job("automation_sync", selection=["clothing_test"])
    return dg.Definitions(
        assets=all_assets(), resources=resources_for(), jobs=[job]
    ).resolve_job_def("automation_sync")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failed_automation_run_is_retried_up_to_the_limit(local_env, monkeypatch):
    """The instance of deploy/dagster.yaml retries a failed run the automation sensor
    launched (its run tags), from the failed step, until MAX_RUN_RETRIES re-executions failed
    too."""
    settings = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    sensor = defs().resolve_sensor_def(AUTOMATION_SENSOR)
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    with dg.instance_for_test(overrides=settings) as instance:
        auto = Automation(instance)
        auto.observe()
        assert "clothing_test" in auto.evaluate()
        monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", str(local_env.root / "gone"))  # fails
        job = dg.reconstructable(sync_test_catalog_job)
        run = dg.execute_job(job, instance, tags=sensor.run_tags, raise_on_error=False)
        assert not run.success
        tries = [run.run_id]
        for number in range(1, MAX_RUN_RETRIES + 1):
            assert instance.get_run_by_id(tries[-1]).tags["dagster/will_retry"] == "true"
            # the re-execution the retry daemon launches: from the failure, in the run group
            # of the first run, with the failed run's tags
            options = dg.ReexecutionOptions.from_failure(tries[-1], instance)
            tags = {
                **sensor.run_tags,
                "dagster/retry_number": str(number),
                "dagster/parent_run_id": tries[-1],
                "dagster/root_run_id": tries[0],
            }
            again = dg.execute_job(
                job, instance, reexecution_options=options, tags=tags, raise_on_error=False
            )
            tries.append(again.run_id)
        assert instance.get_run_by_id(tries[-1]).tags["dagster/will_retry"] == "false"

        # a run launched by hand, without the automation's tags, is not retried
        by_hand = dg.execute_job(job, instance, raise_on_error=False)
        assert instance.get_run_by_id(by_hand.run_id).tags["dagster/will_retry"] == "false"

        monkeypatch.setenv("CLOTHING_TEST_STAGE_URL", str(local_env.test))
        assert dg.execute_job(job, instance, tags=sensor.run_tags).success
        assert "clothing_test" not in auto.evaluate()
