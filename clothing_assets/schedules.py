"""Retraining on a schedule: rebuild trained_model from fresh catalogs, then rescore."""

import dagster as dg

from clothing_assets.jobs import everything_job

DEFAULT_RETRAIN_CRON = "0 3 * * 0"  # Sundays 03:00 UTC


def build_retrain_schedule(cron: str = DEFAULT_RETRAIN_CRON) -> dg.ScheduleDefinition:
    """Runs `everything`: stages and catalogs synced, the model retrained, and (if it passes
    the quality gate) clothing_test rescored with the new model version."""
    return dg.ScheduleDefinition(
        name="retrain_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=everything_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrain and rescore ({cron}, UTC; CLOTHING_RETRAIN_CRON changes it).",
    )
