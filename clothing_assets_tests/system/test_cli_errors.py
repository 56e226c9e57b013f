"""Configuration and usage mistakes on the `clothing-assets` command (the installed console
script, in a subprocess): each ends with exit status 2 and one `error:` line on stderr that
says what is wrong and what to set, never a traceback; an unexpected bug still raises."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clothing_assets import cli
from clothing_assets_tests.support import COLOURS, REPO_ROOT, write_image

CLI = Path(sys.executable).parent / "clothing-assets"


def run(*args: str, cwd: Path, command: list[str] | None = None, **env: str):
    """The CLI with only the given project variables set (a developer's are dropped)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CLOTHING_", "SNOWFLAKE_"))}
    clean.update(PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run(
        [*(command or [str(CLI)]), *args],
        cwd=cwd, env=clean, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def error_line(result: subprocess.CompletedProcess, *names: str) -> str:
    """The one `error:` line of a failed command, checked to name each of `names`."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


def test_unknown_warehouse_names_the_variable_and_its_choices(tmp_path):
    for command in (["models", "list"], ["predictions"], ["serve", "--port", "0"]):
        line = error_line(run(*command, cwd=tmp_path, CLOTHING_WAREHOUSE="nonsense"),
                          "CLOTHING_WAREHOUSE", "nonsense")  # fmt: skip
        assert "local" in line and "snowflake" in line


def test_duckdb_path_that_is_a_folder_or_not_duckdb(tmp_path):
    folder = tmp_path / "a folder"
    folder.mkdir()
    error_line(run("models", "list", cwd=tmp_path, CLOTHING_DUCKDB_PATH=str(folder)),
               "CLOTHING_DUCKDB_PATH", "a folder")  # fmt: skip
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    for command in (["models", "list"], ["predictions"]):
        error_line(run(*command, cwd=tmp_path, CLOTHING_DUCKDB_PATH=str(text)),
                   "CLOTHING_DUCKDB_PATH", "notes.txt", "not a usable DuckDB file")  # fmt: skip
    assert text.read_text() == "not a database\n"


def test_reads_of_a_missing_warehouse_say_so_and_create_nothing(tmp_path):
    missing = tmp_path / "nowhere" / "clothing.duckdb"
    for command in (["models", "list"], ["predictions"], ["models", "promote", "0123abcd"]):
        line = error_line(run(*command, cwd=tmp_path, CLOTHING_DUCKDB_PATH=str(missing)),
                          "CLOTHING_DUCKDB_PATH", str(missing))  # fmt: skip
        assert "does not exist" in line
    assert not missing.parent.exists()


def test_snowflake_mode_lists_every_missing_variable_at_once(tmp_path):
    wanted = ["SNOWFLAKE_USER", "SNOWFLAKE_PASSWORD", "SNOWFLAKE_ROLE", "SNOWFLAKE_WAREHOUSE",
              "SNOWFLAKE_DATABASE", "SNOWFLAKE_SCHEMA",
              "CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION"]  # fmt: skip
    for command in (["models", "list"], ["predictions"], ["serve", "--port", "0"]):
        line = error_line(
            run(*command, cwd=tmp_path, CLOTHING_WAREHOUSE="snowflake", SNOWFLAKE_ACCOUNT="xy1"),
            *wanted,
        )
        assert "SNOWFLAKE_ACCOUNT" not in line  # it is set
    keyed = run("models", "list", cwd=tmp_path, SNOWFLAKE_ACCOUNT="xy1", SNOWFLAKE_USER="u",
                SNOWFLAKE_PRIVATE_KEY_PATH="/keys/k.p8")  # fmt: skip
    line = error_line(keyed, "SNOWFLAKE_ROLE", "CLOTHING_SNOWFLAKE_STORAGE_INTEGRATION")
    assert "SNOWFLAKE_PASSWORD" not in line and "SNOWFLAKE_USER" not in line


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["serve", "--max-batch-size", "0"], "--max-batch-size"),
        (["serve", "--workers", "0"], "--workers"),
        (["serve", "--workers", "two"], "--workers"),
        (["serve", "--max-wait-ms", "soon"], "--max-wait-ms"),
        (["serve", "--port", "70000"], "--port"),
        (["predictions", "-n", "0"], "-n"),
    ],
)
def test_invalid_flags_name_the_flag_typed(tmp_path, args, flag):
    line = error_line(run(*args, cwd=tmp_path), flag, args[-1])
    assert "CLOTHING_SERVE" not in line


def test_the_servers_module_entry_point_speaks_the_same_way(tmp_path):
    module = [sys.executable, "-m", "clothing_assets.serve"]
    line = error_line(run("--max-batch-size", "0", cwd=tmp_path, command=module),
                      "--max-batch-size")  # fmt: skip
    assert "CLOTHING_SERVE" not in line
    # a bad variable names the variable
    error_line(run(cwd=tmp_path, command=module, CLOTHING_SERVE_MAX_BATCH_SIZE="0"),
               "CLOTHING_SERVE_MAX_BATCH_SIZE")  # fmt: skip


def test_bad_variables_and_usage_mistakes(tmp_path):
    error_line(run("models", "promote", "0123abcd", cwd=tmp_path, CLOTHING_MIN_VAL_ACCURACY="high"),
               "CLOTHING_MIN_VAL_ACCURACY", "high")  # fmt: skip
    error_line(run("models", "promote", cwd=tmp_path), "required", "version")
    error_line(run("nonsense", cwd=tmp_path), "nonsense", "--help")


def test_predict_with_a_missing_or_unusable_model_file(tmp_path):
    image = write_image(tmp_path / "hat.jpg", COLOURS["hat"], seed=1)
    missing = tmp_path / "no such model.pt"
    line = error_line(run("predict", "--model", str(missing), str(image), cwd=tmp_path),
                      "--model", str(missing))  # fmt: skip
    assert "does not exist" in line
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    error_line(run("predict", "--model", str(junk), str(image), cwd=tmp_path),
               "--model", "junk.pt", "not a clothing-assets model file")  # fmt: skip
    env_missing = run("predict", str(image), cwd=tmp_path,
                      CLOTHING_SERVE_MODEL_FILE=str(missing))  # fmt: skip
    error_line(env_missing, "CLOTHING_SERVE_MODEL_FILE", "does not exist")


def _subparsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _subparsers(sub)


def test_every_argument_has_help_and_help_shows_defaults(tmp_path):
    for parser in _subparsers(cli.build_parser()):
        for action in parser._actions:
            assert action.help, (parser.prog, action.dest)
    wide = {"COLUMNS": "300"}  # one line per option
    shown = run("serve", "--help", cwd=tmp_path, **wide)
    assert shown.returncode == 0
    assert "(default: 127.0.0.1)" in shown.stdout and "(default: 8000)" in shown.stdout
    assert "(CLOTHING_SERVE_MAX_BATCH_SIZE) (default: 16)" in shown.stdout
    assert "(default: 20)" in run("predictions", "--help", cwd=tmp_path, **wide).stdout


def test_an_unexpected_bug_still_raises(monkeypatch):
    def broken(args):
        return 1 / 0

    monkeypatch.setattr(cli, "models_list", broken)
    with pytest.raises(ZeroDivisionError):
        cli.main(["models", "list"])
