"""Where scoring runs (ml/cluster.py): the device setting against the workers' GPUs."""

from __future__ import annotations

import pytest

from clothing_assets.ml.cluster import DeviceUnavailable, choose_gpu


@pytest.mark.parametrize(
    ("device", "gpu_workers", "expected"),
    [
        ("auto", [], False),
        ("auto", ["tcp://a:1"], True),
        ("cpu", ["tcp://a:1"], False),
        ("cuda", ["tcp://a:1"], True),
        ("cuda", [], "no Dask worker advertises a GPU"),
        ("tpu", [], "must be 'auto', 'cpu' or 'cuda'"),
    ],
)
def test_choose_gpu_follows_the_config_and_the_workers(device, gpu_workers, expected):
    if isinstance(expected, str):
        with pytest.raises(DeviceUnavailable, match=expected):
            choose_gpu(device, gpu_workers)
    else:
        assert choose_gpu(device, gpu_workers) is expected
