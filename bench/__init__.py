"""Benchmarks, each run from the repository root as `python -m bench.<name>`; what they share
is in `bench.common`."""
