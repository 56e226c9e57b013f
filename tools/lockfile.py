"""The hashed lock that `make setup` installs and `make lock` writes (standard library only: it
runs in a venv that holds nothing else yet).

    write REPORT CONSTRAINTS LOCK   from a `pip install --dry-run --report` of the whole dev
                                    install: CONSTRAINTS, the versions as plain pins (for
                                    `pip install -c` with any choice of extras), and LOCK, the
                                    same versions each with the sha256 of its file (for
                                    `pip install --require-hashes --no-deps -r`)
    select --torch pypi|cpu LOCK    print the part of LOCK to install: all of it for PyTorch's
                                    PyPI build; for the CPU-only build, all but that build's
                                    lines (torch, torchvision and the CUDA packages only it needs)
    cpu-wheels LOCK                 print the CPU-only torch and torchvision at LOCK's versions
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

# What PyTorch's PyPI build for Linux adds to its CPU-only build: torch and torchvision
# themselves, triton and the CUDA runtime packages. Nothing else in the project requires these.
TORCH_BUILD = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")
CPU_WHEELS = ("torch", "torchvision")
CPU_LOCAL_VERSION = "cpu"

LOCK_HEADER = """\
# Every package of `make setup` (the project with its dev extras), each pinned with the sha256 of
# its file: installed with pip --require-hashes --no-deps, so a file on the index that differs
# from the one locked fails the install. The files are those for Linux x86_64, CPython 3.11.
# Written by `make lock` (tools/lockfile.py) with constraints.txt; do not edit by hand.
"""
CONSTRAINTS_HEADER = """\
# The versions of requirements.lock without hashes, written with it by `make lock`: an install
# of chosen extras keeps to them with `pip install -c constraints.txt -e '.[s3]'`, and make lock
# starts its resolve from them (a fresh resolve of pyproject's ranges alone backtracks for half
# an hour). To let a package move, delete its line and run make lock.
"""


@dataclass(frozen=True)
class Pin:
    """One locked package: its name as its metadata spells it, its version, its file's sha256."""

    name: str
    version: str
    sha256: str


def canonical(name: str) -> str:
    """The name as the package index compares names (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins_from_report(report: dict) -> list[Pin]:
    """The pins of a pip installation report (`--report`), sorted by name. The project itself
    (a local directory) is left out; any other entry without a file hash is an error."""
    if not isinstance(report.get("install"), list):
        raise ValueError("not a pip installation report: it has no 'install' list")
    pins = []
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        info = item["download_info"]
        if "dir_info" in info:
            continue
        sha256 = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha256:
            raise ValueError(f"{name} {version} from {info.get('url')} has no sha256 to lock")
        pins.append(Pin(name, version, sha256))
    return sorted(pins, key=lambda pin: canonical(pin.name))


def render_lock(pins: list[Pin]) -> str:
    """The hashed requirements file."""
    lines = [f"{p.name}=={p.version} \\\n    --hash=sha256:{p.sha256}\n" for p in pins]
    return LOCK_HEADER + "".join(lines)


def render_constraints(pins: list[Pin]) -> str:
    """The plain pins."""
    return CONSTRAINTS_HEADER + "".join(f"{p.name}=={p.version}\n" for p in pins)


def parse_lock(text: str) -> list[Pin]:
    """The pins of a hashed requirements file; an entry that is not `name==version` with
    exactly one sha256 is an error quoting it."""
    logical = re.sub(r"\\\n", " ", text)
    pins = []
    for raw in logical.splitlines():
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(
            r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line
        )
        if not match:
            raise ValueError(f"lock entry {line!r} is not 'name==version --hash=sha256:<64 hex>'")
        pins.append(Pin(*match.groups()))
    return pins


def select(pins: list[Pin], torch: str) -> list[Pin]:
    """The pins `make setup TORCH=<torch>` installs from the lock."""
    if torch == "pypi":
        return pins
    if torch == "cpu":
        return [p for p in pins if not TORCH_BUILD.match(canonical(p.name))]
    raise ValueError(f"TORCH={torch!r}: choose pypi (the default) or cpu")


def cpu_wheels(pins: list[Pin]) -> list[str]:
    """Requirements for PyTorch's CPU-only torch and torchvision at the lock's versions."""
    versions = {canonical(p.name): p.version for p in pins}
    missing = [name for name in CPU_WHEELS if name not in versions]
    if missing:
        raise ValueError(f"the lock has no {' or '.join(missing)}")
    return [f"{name}=={versions[name]}+{CPU_LOCAL_VERSION}" for name in CPU_WHEELS]


def main(argv: list[str] | None = None) -> int:
    """The command line of the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("write")
    write.add_argument("report", type=Path)
    write.add_argument("constraints", type=Path)
    write.add_argument("lock", type=Path)
    chosen = commands.add_parser("select")
    chosen.add_argument("--torch", required=True)
    chosen.add_argument("lock", type=Path)
    wheels = commands.add_parser("cpu-wheels")
    wheels.add_argument("lock", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            pins = pins_from_report(json.loads(args.report.read_text()))
            args.constraints.write_text(render_constraints(pins))
            args.lock.write_text(render_lock(pins))
        elif args.command == "select":
            pins = select(parse_lock(args.lock.read_text()), args.torch)
            sys.stdout.write(render_lock(pins))
        else:
            print("\n".join(cpu_wheels(parse_lock(args.lock.read_text()))))
    except (OSError, ValueError, KeyError) as exc:
        print(f"lockfile.py {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
