"""The dependency floors in pyproject.toml refuse releases with known
code-execution or memory-corruption holes."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement

from clothing_assets_tests.support import REPO_ROOT

PYPROJECT = REPO_ROOT / "pyproject.toml"

# (package, newest vulnerable release, why)
VULNERABLE = [
    ("torch", "2.5.1", "CVE-2025-32434: torch.load(weights_only=True) executes code before 2.6"),
    ("torchvision", "0.20.1", "the release matching torch 2.5; 0.21 matches torch 2.6"),
    ("pillow", "10.0.0", "CVE-2023-4863: libwebp heap overflow, fixed in 10.0.1"),
    ("pillow", "10.1.0", "CVE-2023-50447: ImageMath.eval code execution, fixed in 10.2.0"),
    ("pillow", "10.2.0", "CVE-2024-28219: _imagingcms buffer overflow, fixed in 10.3.0"),
]


def _requirements() -> dict[str, Requirement]:
    deps = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    return {r.name.lower(): r for r in map(Requirement, deps)}


@pytest.mark.parametrize(("package", "version", "why"), VULNERABLE)
def test_a_known_vulnerable_release_is_refused(package: str, version: str, why: str) -> None:
    spec = _requirements()[package].specifier
    assert not spec.contains(version, prereleases=True), f"{package}{spec} admits {version}: {why}"


@pytest.mark.parametrize(
    ("package", "version"), [("torch", "2.6.0"), ("torchvision", "0.21.0"), ("pillow", "10.3.0")]
)
def test_the_first_fixed_release_is_still_admitted(package: str, version: str) -> None:
    assert _requirements()[package].specifier.contains(version)
