"""The hashed lock make setup installs (requirements.lock), the plain pins beside it
(constraints.txt), and tools/lockfile.py, which writes and selects from them."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from clothing_assets_tests.support import REPO_ROOT

LOCK = REPO_ROOT / "requirements.lock"
CONSTRAINTS = REPO_ROOT / "constraints.txt"


def _load_lockfile():
    spec = importlib.util.spec_from_file_location("lockfile", REPO_ROOT / "tools" / "lockfile.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while building the class
    spec.loader.exec_module(module)
    return module


lockfile = _load_lockfile()


def _entries(text: str) -> list[str]:
    """The requirement entries of a requirements file, continuation lines joined."""
    joined = text.replace("\\\n", " ")
    lines = (" ".join(ln.split()) for ln in joined.splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_every_entry_of_the_lock_carries_one_sha256():
    entries = _entries(LOCK.read_text())
    assert len(entries) > 150
    unhashed = [e for e in entries if not re.search(r"--hash=sha256:[0-9a-f]{64}$", e)]
    assert not unhashed
    assert all(re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*==\S+ ", e) for e in entries)
    assert len(lockfile.parse_lock(LOCK.read_text())) == len(entries)


def test_constraints_hold_the_locks_versions():
    locked = {(p.name, p.version) for p in lockfile.parse_lock(LOCK.read_text())}
    pins = {tuple(e.split("==")) for e in _entries(CONSTRAINTS.read_text())}
    assert pins == locked


def _dev_requirements() -> list[Requirement]:
    """pyproject's dependencies and those of the extras `dev` brings in, `dev`'s own too."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements, pending, seen = list(map(Requirement, project["dependencies"])), ["dev"], set()
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for requirement in map(Requirement, extras[extra]):
            if requirement.name == "clothing_assets":
                pending.extend(requirement.extras - seen)
            else:
                requirements.append(requirement)
    return requirements


def test_the_lock_satisfies_every_dependency_of_the_dev_install():
    locked = {lockfile.canonical(p.name): p.version for p in lockfile.parse_lock(LOCK.read_text())}
    for requirement in _dev_requirements():
        name = lockfile.canonical(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run make lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{name}=={locked[name]} is outside pyproject's {requirement.specifier}"
        )


def test_snowflake_and_dask_integration_stay_out_of_the_base_install():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    base = {Requirement(r).name for r in project["dependencies"]}
    assert not base & {"dagster-snowflake", "snowflake-connector-python", "dagster-dask"}
    snowflake = {Requirement(r).name for r in project["optional-dependencies"]["snowflake"]}
    assert "dagster-snowflake" in snowflake


def test_pyproject_admits_the_cpu_only_wheels_at_the_locked_versions():
    requirements = {lockfile.canonical(r.name): r for r in _dev_requirements()}
    wheels = lockfile.cpu_wheels(lockfile.parse_lock(LOCK.read_text()))
    assert [w.split("==")[0] for w in wheels] == ["torch", "torchvision"]
    for wheel in wheels:
        name, version = wheel.split("==")
        assert version.endswith("+cpu")
        assert requirements[name].specifier.contains(version), (name, version)


REPORT = {
    "install": [
        {
            "metadata": {"name": "clothing_assets", "version": "0.1.0"},
            "download_info": {"url": "file:///repo", "dir_info": {"editable": True}},
        },
        *[
            {
                "metadata": {"name": name, "version": version},
                "download_info": {
                    "url": f"https://files.example/{name}-{version}.whl",
                    "archive_info": {"hashes": {"sha256": digit * 64}},
                },
            }
            for name, version, digit in [
                ("torch", "2.14.1", "1"),
                ("nvidia_cublas", "13.1.1.3", "2"),
                ("Jinja2", "3.1.6", "3"),
                ("cuda-toolkit", "13.0.3.0", "4"),
                ("torchvision", "0.29.1", "5"),
                ("triton", "3.8.0", "6"),
                ("duckdb", "1.5.6", "7"),
            ]
        ],
    ]
}


def test_pins_from_a_report_leave_out_the_project_and_sort_by_name():
    pins = lockfile.pins_from_report(REPORT)
    assert [p.name for p in pins] == [
        "cuda-toolkit", "duckdb", "Jinja2", "nvidia_cublas", "torch", "torchvision", "triton",
    ]  # fmt: skip
    assert pins[1] == lockfile.Pin("duckdb", "1.5.6", "7" * 64)


def test_a_report_entry_without_a_hash_is_refused_by_name():
    entry = {
        "metadata": {"name": "odd", "version": "1.0"},
        "download_info": {"url": "git+https://example/odd", "vcs_info": {"vcs": "git"}},
    }
    with pytest.raises(ValueError, match=r"odd 1\.0 from git\+https://example/odd has no sha256"):
        lockfile.pins_from_report({"install": [entry]})
    with pytest.raises(ValueError, match="not a pip installation report"):
        lockfile.pins_from_report({"version": "1"})


def test_the_written_lock_reads_back_as_the_same_pins():
    pins = lockfile.pins_from_report(REPORT)
    assert lockfile.parse_lock(lockfile.render_lock(pins)) == pins


@pytest.mark.parametrize(
    "entry",
    ["duckdb==1.5.6", "duckdb>=1.5 --hash=sha256:" + "7" * 64, "duckdb==1.5.6 --hash=md5:abc"],
)
def test_an_entry_without_an_exact_pin_and_sha256_is_refused(entry):
    text = lockfile.render_lock(lockfile.pins_from_report(REPORT)) + entry + "\n"
    with pytest.raises(ValueError, match=re.escape(f"lock entry {entry!r} is not")):
        lockfile.parse_lock(text)


def test_the_cpu_choice_leaves_out_exactly_the_pypi_torch_build():
    pins = lockfile.pins_from_report(REPORT)
    assert lockfile.select(pins, "pypi") == pins
    assert [p.name for p in lockfile.select(pins, "cpu")] == ["duckdb", "Jinja2"]
    assert lockfile.cpu_wheels(pins) == ["torch==2.14.1+cpu", "torchvision==0.29.1+cpu"]
    with pytest.raises(ValueError, match="TORCH='cuda': choose pypi"):
        lockfile.select(pins, "cuda")
    with pytest.raises(ValueError, match="the lock has no torch or torchvision"):
        lockfile.cpu_wheels(pins[1:2])


def test_the_command_line_writes_both_files_and_selects(tmp_path, capsys):
    report = tmp_path / "report.json"
    report.write_text(json.dumps(REPORT))
    constraints, lock = tmp_path / "constraints.txt", tmp_path / "requirements.lock"
    assert lockfile.main(["write", str(report), str(constraints), str(lock)]) == 0
    assert _entries(constraints.read_text())[0] == "cuda-toolkit==13.0.3.0"
    assert len(lockfile.parse_lock(lock.read_text())) == 7
    assert lockfile.main(["select", "--torch", "cpu", str(lock)]) == 0
    assert _entries(capsys.readouterr().out) == [
        "duckdb==1.5.6 --hash=sha256:" + "7" * 64,
        "Jinja2==3.1.6 --hash=sha256:" + "3" * 64,
    ]
    assert lockfile.main(["cpu-wheels", str(lock)]) == 0
    assert capsys.readouterr().out.split() == ["torch==2.14.1+cpu", "torchvision==0.29.1+cpu"]
    assert lockfile.main(["select", "--torch", "gpu", str(lock)]) == 2
    assert "TORCH='gpu': choose pypi (the default) or cpu" in capsys.readouterr().err


def _wheel(folder: Path, body: str) -> Path:
    """A minimal pure-Python wheel of package `tinypkg` 1.0 whose module holds `body`."""
    path = folder / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("tinypkg.py", body)
        info = "tinypkg-1.0.dist-info/"
        wheel.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        tags = "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        wheel.writestr(info + "WHEEL", tags)
        wheel.writestr(info + "RECORD", "")
    return path


def test_pip_refuses_a_file_that_differs_from_the_locked_one(tmp_path):
    index = tmp_path / "index"
    index.mkdir()
    locked = _wheel(index, "VALUE = 1\n")
    pin = lockfile.Pin("tinypkg", "1.0", hashlib.sha256(locked.read_bytes()).hexdigest())
    lock = tmp_path / "requirements.lock"
    lock.write_text(lockfile.render_lock([pin]))

    def download() -> subprocess.CompletedProcess[str]:
        command = [
            sys.executable, "-m", "pip", "download", "--require-hashes", "--no-deps",
            "--no-index", "--find-links", str(index), "-d", str(tmp_path / "out"), "-r", str(lock),
        ]  # fmt: skip
        env = {**os.environ, "PIP_CONFIG_FILE": os.devnull}  # this test's folder, nothing else
        return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)

    assert download().returncode == 0
    _wheel(index, "VALUE = 2\n")  # same name and version, other bytes: a swapped file
    (tmp_path / "out" / locked.name).unlink()
    swapped = download()
    assert swapped.returncode != 0
    assert "DO NOT MATCH THE HASHES" in swapped.stderr
