"""The package as users get it: a wheel, installed (not editable) into a fresh venv, runs the
whole graph from a folder outside the repository, with its SQL read from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import duckdb
import pytest

from clothing_assets.sql import sql_names
from clothing_assets_tests.support import CLASSES, REPO_ROOT, TINY_TRAINING

ROOT = REPO_ROOT
# what a build needs from the checkout; everything else (data, models, .venv, .git) stays out
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "clothing_assets")


# the whole graph on the installed package's own definitions and resources, as a user would
RUN_GRAPH = """
import json, sys
import dagster as dg
from clothing_assets.definitions import all_assets
from clothing_assets.environment import resources_for
result = dg.materialize(
    all_assets(),
    resources=resources_for(),
    run_config=dg.RunConfig(ops={"trained_model": {"config": json.loads(sys.argv[1])}}),
    raise_on_error=False,
)
print("success", result.success)
"""


def build_wheel(dest: Path) -> Path:
    """A wheel of the checkout, built offline from a copy (no build/ or egg-info in the repo)."""
    source = dest / "source"
    source.mkdir(parents=True)
    for name in SOURCES:
        if (ROOT / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=skip)
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
            "--no-index", "-q", "-w", str(dest / "dist"), str(source),
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    [wheel] = (dest / "dist").glob("clothing_assets-*.whl")
    return wheel


def venv_with_wheel(dest: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A fresh venv holding the wheel (no deps); the running venv's site-packages are appended
    through a plain .pth line, so torch and the rest are seen but never reinstalled, and that
    folder's own .pth files (the repo's editable finder among them) are not executed."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True, timeout=120
    )
    python = dest / "bin" / "python"
    subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
            "--no-deps", "--no-index", str(wheel),
        ],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_project_dependencies.pth").write_text("\n".join(sorted(shared)) + "\n")
    return python


def clean_env(tmp_path: Path) -> dict[str, str]:
    """The test's CLOTHING_* settings (see `local_env`), without PYTHONPATH: no route back to
    the checkout (pip would also take a checkout on PYTHONPATH for an installed package)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    home = tmp_path / "dagster_home"
    home.mkdir()
    return {**env, "DAGSTER_HOME": str(home)}


@pytest.mark.slow
def test_wheel_installs_and_runs_the_graph_outside_the_repo(local_env, tmp_path):
    wheel = build_wheel(tmp_path / "build")
    with zipfile.ZipFile(wheel) as archive:
        packed = set(archive.namelist())
    for dialect in ("duckdb", "snowflake"):
        names = sql_names(dialect)
        assert names
        for name in names:
            assert f"clothing_assets/sql/{dialect}/{name}.sql" in packed

    venv, env = tmp_path / "venv", clean_env(tmp_path)
    python = venv_with_wheel(venv, wheel, env)
    where = subprocess.run(
        [str(python), "-c", "import clothing_assets.sql as s; print(s.__file__)"],
        cwd=tmp_path, env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    # in-process (the CLI's multiprocess executor would re-import the package once per step)
    result = subprocess.run(
        [str(python), "-c", RUN_GRAPH, json.dumps(TINY_TRAINING)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("success True"), result.stdout[-2000:]
    with duckdb.connect(str(local_env.duckdb), read_only=True) as conn:
        rows, scored = conn.execute(
            "SELECT count(*), count(MODEL_VERSION) FROM clothing_test"
        ).fetchone()
    assert rows == scored == 3 * len(CLASSES)
