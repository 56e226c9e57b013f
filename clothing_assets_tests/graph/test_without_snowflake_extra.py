"""An install without the `snowflake` extra: the code location loads and the DuckDB path runs
with dagster_snowflake and snowflake absent, and Snowflake mode fails with one line naming the
extra. Each case runs in a subprocess whose import system refuses those two packages, as an
environment without them would."""

from __future__ import annotations

import subprocess
import sys

from clothing_assets_tests.support import REPO_ROOT

# Run first in the subprocess: any import of the two packages fails as if absent, and their entry
# points are gone as if never installed. The snowpark wheel's .pth file imports the `snowflake`
# namespace at interpreter start, so that goes too.
ABSENT_SNOWFLAKE = """
import sys
BLOCKED = ("dagster_snowflake", "snowflake")
for loaded in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[loaded]
class _Absent:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _Absent())
# nor are their entry points: loading the defs folder loads every installed dg plugin
import importlib.metadata as _metadata
_entry_points = _metadata.entry_points
def _installed_entry_points(**params):
    found = _entry_points(**params)
    if "group" not in params:
        return found
    return type(found)(e for e in found if e.value.partition(".")[0] not in BLOCKED)
_metadata.entry_points = _installed_entry_points
"""


def run_without_snowflake(code: str) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter where importing dagster_snowflake or snowflake fails."""
    return subprocess.run(
        [sys.executable, "-c", ABSENT_SNOWFLAKE + code],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_the_blocker_makes_the_snowflake_packages_unimportable():
    done = run_without_snowflake("import snowflake.connector")
    assert done.returncode != 0
    assert "No module named 'snowflake'" in done.stderr


def test_defs_load_and_duckdb_syncs_without_the_snowflake_packages(local_env, monkeypatch):
    monkeypatch.delenv("SNOWFLAKE_ACCOUNT", raising=False)
    code = (
        "import dagster as dg; import clothing_assets.definitions as d; "
        "from clothing_assets.environment import resources_for; "
        "loaded = d.defs(); assert loaded.resolve_job_def('everything') is not None; "
        "assert dg.materialize(d.all_assets(), resources=resources_for(), "
        "selection=['clothing_dataset', 'clothing_test']).success; "
        "print(sorted(m for m in sys.modules if m.partition('.')[0] in "
        "('dagster_snowflake', 'snowflake')))"
    )
    done = run_without_snowflake(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert local_env.duckdb.is_file()


def test_snowflake_mode_without_the_extra_fails_with_one_line_naming_it(local_env, monkeypatch):
    monkeypatch.setenv("CLOTHING_WAREHOUSE", "snowflake")
    done = run_without_snowflake("import clothing_assets.definitions as d; d.defs()")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("clothing_assets.environment.MissingExtraError: "), done.stderr
    assert "pip install 'clothing_assets[snowflake]'" in last
    assert "dagster_snowflake" in last
    # the cause is the install, so the chained import traceback is left out
    assert "During handling of the above exception" not in done.stderr
