"""The server's registry source: it follows the champion through a warehouse and a model store
built once, not rebuilt at every poll, and keeps the stored file's hash check."""

from __future__ import annotations

import dagster
import pytest

from clothing_assets.serve.source import RegistryModelSource, RegistryReader, RejectedModel
from clothing_assets_tests.support import register_model
from clothing_assets_tests.support.models import tiny_model_bytes


def test_the_registry_source_builds_its_resources_once_and_follows_the_champion(
    local_env, monkeypatch
):
    builds: list[object] = []
    real_build = dagster.build_resources

    def counted_build(*args, **kwargs):
        builds.append(args)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(dagster, "build_resources", counted_build)
    source = RegistryModelSource()
    assert source.current() is None  # no champion yet
    first_bytes, second_bytes = tiny_model_bytes(seed=1), tiny_model_bytes(seed=2)
    first = register_model(local_env, first_bytes)
    assert [source.current() for _ in range(3)] == [(first, first_bytes)] * 3
    second = register_model(local_env, second_bytes)  # promoted: the new champion
    assert source.current() == (second, second_bytes)
    assert len(builds) == 1


def test_a_reader_refuses_a_champion_file_that_does_not_match_its_recorded_hash(local_env):
    from clothing_assets.environment import registry_parts

    data = tiny_model_bytes(seed=1)
    version = register_model(local_env, data)
    stored = local_env.models / "versions" / f"{version}.pt"
    stored.write_bytes(data[:-4] + b"\0\0\0\0")
    source = RegistryModelSource(RegistryReader(*registry_parts()))
    with pytest.raises(RejectedModel, match="does not match its version"):
        source.current()


def test_a_snowflake_reader_is_built_once_with_its_variables_resolved(tmp_path, monkeypatch):
    """The Snowflake warehouse's account fields are `dg.EnvVar`s: the reader built once keeps
    their values after the build, and asks the warehouse (fakesnow) at each poll."""
    import fakesnow

    from clothing_assets.environment import registry_parts
    from clothing_assets_tests.support.fakesnow_warehouse import NOP_REGEXES

    variables = {
        "CLOTHING_WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "fakesnow",
        "SNOWFLAKE_USER": "fakesnow", "SNOWFLAKE_PASSWORD": "fakesnow",
        "SNOWFLAKE_ROLE": "fakesnow", "SNOWFLAKE_WAREHOUSE": "fakesnow",
        "SNOWFLAKE_DATABASE": "CLOTHING", "SNOWFLAKE_SCHEMA": "PUBLIC",
        "CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION": "fakesnow",
        "CLOTHING_MODELS_DIR": str(tmp_path / "models"),
        "CLOTHING_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with fakesnow.patch(nop_regexes=NOP_REGEXES):
        warehouse, store = registry_parts()
        assert warehouse.snowflake.account == "fakesnow"  # the value, not the variable's name
        source = RegistryModelSource(RegistryReader(warehouse, store))
        assert [source.current() for _ in range(2)] == [None, None]
