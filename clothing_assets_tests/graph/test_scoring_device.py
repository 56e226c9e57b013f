"""The scoring device asked of a cluster that cannot offer it: the predictions step fails at
once (no retry, nothing written) with a message that says what to change."""

from __future__ import annotations

import dagster as dg
import pytest

from clothing_assets_tests.support import materialize, register_model, step_failure
from clothing_assets_tests.support.models import tiny_model_bytes

SCORE = ["clothing_dataset", "clothing_test", "clothing_predictions"]


@pytest.mark.timeout(180)
def test_cuda_on_a_cluster_without_gpus_fails_once_and_names_the_fix(local_env):
    register_model(local_env, tiny_model_bytes())
    config = dg.RunConfig(ops={"clothing_predictions": {"config": {"device": "cuda"}}})
    result = materialize(SCORE, config)
    assert not result.success
    error = step_failure(result)
    assert "no Dask worker advertises a GPU resource" in error.message
    assert "--resources GPU=1" in error.message
    retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retried == []
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "clothing_predictions" not in materialized and "clothing_test" in materialized
