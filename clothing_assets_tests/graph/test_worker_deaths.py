"""A file that kills every Dask worker that reads it gets an error on its row, and every other
row is scored, on the run's own LocalCluster."""

from __future__ import annotations

import dagster as dg
import dask
import pandas as pd
import pytest

from clothing_assets_tests.support import (
    CLASSES,
    faults,
    materialize,
    metadata_of,
    read_table,
    register_model,
)
from clothing_assets_tests.support.models import tiny_model


@pytest.mark.timeout(600)
def test_a_file_that_kills_its_workers_gets_an_error_and_every_other_row_is_scored(
    local_env, monkeypatch
):
    # The run's own LocalCluster (worker processes under nannies); whichever worker starts
    # to read the poison file dies on the spot, as one the OOM killer ends mid-decode. Five
    # workers outnumber the four deaths: on a loaded 2-core machine a nanny's restart can take
    # minutes or not come at all, and the rows must not wait for one.
    monkeypatch.setenv("CLOTHING_DASK_WORKERS", "5")
    version = register_model(local_env, tiny_model()[0])
    poison, deaths = "pants/pants_1.jpg", local_env.root / "deaths"
    monkeypatch.setenv(faults.EXIT_WHEN_SCORING, poison)
    monkeypatch.setenv(faults.EXIT_MARKER, str(deaths))
    with dask.config.set({"distributed.worker.preload": ["clothing_assets_tests.support.faults"]}):
        result = materialize(
            ["clothing_dataset", "clothing_test", "clothing_predictions"],
            dg.RunConfig(ops={"clothing_predictions": {"config": {"batch_size": 4}}}),
        )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    # allowed-failures 1: two workers died on its batch of 4, two more on the file alone
    assert len(deaths.read_text().splitlines()) == 4

    table = read_table(local_env, "clothing_test").set_index("RELATIVE_PATH")
    error = table.loc[poison, "ERROR"]
    assert error.startswith("the Dask worker died while scoring this file (KilledWorker"), error
    assert pd.isna(table.loc[poison, "TYPE"]) and table.loc[poison, "MODEL_VERSION"] == version
    others = table.drop(index=poison)
    assert len(others) == 8 and others["ERROR"].isna().all()
    assert others["TYPE"].isin(CLASSES).all() and (others["MODEL_VERSION"] == version).all()
    meta = metadata_of(result, "clothing_predictions")
    assert meta["rows_scored"] == 9 and meta["rows_with_error"] == 1
