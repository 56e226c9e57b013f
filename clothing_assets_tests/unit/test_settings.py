"""Configuration variables (settings.py): parsed or refused naming the variable, secrets never
echoed."""

from __future__ import annotations

import pytest

from clothing_assets.settings import SettingsError, env_or_default, setting


@pytest.mark.parametrize("set_it", [True, False])
def test_env_or_default(monkeypatch, set_it):
    if set_it:
        monkeypatch.setenv("CLOTHING_DUCKDB_PATH", "elsewhere.duckdb")
        assert env_or_default("CLOTHING_DUCKDB_PATH").env_var_name == "CLOTHING_DUCKDB_PATH"
    else:
        monkeypatch.delenv("CLOTHING_DUCKDB_PATH", raising=False)
        assert env_or_default("CLOTHING_DUCKDB_PATH") == "data/clothing.duckdb"


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [("CLOTHING_KEEP_MODELS", "", 5), ("CLOTHING_KEEP_MODELS", "0", 0),
     ("CLOTHING_MIN_VAL_ACCURACY", " 0.7 ", 0.7), ("CLOTHING_DASK_WORKERS", "3", 3),
     ("CLOTHING_KEEP_MODELS", "-1", SettingsError), ("CLOTHING_DASK_WORKERS", "0", SettingsError),
     ("CLOTHING_MIN_VAL_ACCURACY", "high", SettingsError),
     ("CLOTHING_HTTP_DEADLINE_SECONDS", "0", SettingsError)],
)  # fmt: skip
def test_settings_parse_or_name_the_variable(monkeypatch, name, raw, expected):
    monkeypatch.setenv(name, raw)
    if expected is SettingsError:
        with pytest.raises(SettingsError, match=f"^{name}="):
            setting(name)
    else:
        assert setting(name) == expected


def test_a_secret_setting_is_never_echoed(monkeypatch):
    monkeypatch.setenv("SNOWFLAKE_LOGIN_TIMEOUT", "soon")
    with pytest.raises(SettingsError, match="'soon'"):
        setting("SNOWFLAKE_LOGIN_TIMEOUT")
    with pytest.raises(KeyError, match="not a setting"):
        setting("CLOTHING_NO_SUCH_THING")
