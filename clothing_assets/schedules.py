"""Retraining on a schedule: rebuild trained_model from fresh catalogs, then rescore."""

import dagster as dg

from clothing_assets.jobs import everything_job
from clothing_assets.settings import VARIABLES

DEFAULT_RETRAIN_CRON = VARIABLES["CLOTHING_RETRAIN_CRON"].default  # Sundays 03:00 UTC


def build_retrain_schedule(cron: str = DEFAULT_RETRAIN_CRON) -> dg.ScheduleDefinition:
    """Runs `everything`: stages and catalogs synced, a challenger trained and decided on,
    and clothing_test rescored by the champion (the new one only if it was promoted)."""
    return dg.ScheduleDefinition(
        name="retrain_schedule",
        cron_schedule=cron,
        execution_timezone="UTC",
        job=everything_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Retrain and rescore ({cron}, UTC; CLOTHING_RETRAIN_CRON changes it).",
    )
