# The README's commands. `make run` sets up and materializes every asset on the embedded
# default; `make test` sets up and runs the tests. DATA=<folder> links an existing copy of
# clothing-dataset-small instead of downloading it.
PYTHON ?= python3
VENV ?= .venv
DATA ?=
BIN := $(VENV)/bin
# TORCH=cpu: PyTorch's CPU-only build (no CUDA packages) from PyTorch's own wheel index instead
# of the PyPI build. A venv keeps the choice it was set up with; remove it to switch.
TORCH ?= $(or $(shell cat $(VENV)/.torch 2>/dev/null),pypi)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# only the commands that keep run history use it; the tests make their own instances
run dev: export DAGSTER_HOME := $(DAGSTER_HOME)
# dg compares the active venv with the project's and warns when none is active
dev check: export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup torch-choice data run dev check test test-fast lint lock

setup: $(VENV)/.installed

torch-choice:
	@case "$(TORCH)" in pypi|cpu) ;; *) echo "TORCH=$(TORCH): choose pypi (the default) or cpu" >&2; exit 2;; esac
	@if [ -f $(VENV)/.torch ] && [ "$$(cat $(VENV)/.torch)" != "$(TORCH)" ]; then \
	    echo "$(VENV) was set up with TORCH=$$(cat $(VENV)/.torch): remove it to set up TORCH=$(TORCH)" >&2; \
	    exit 2; fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Every package from requirements.lock, each file checked against its locked sha256, none
# resolved or built here; then the project itself, built with the locked setuptools.
$(VENV)/.installed: pyproject.toml setup.cfg requirements.lock tools/lockfile.py | torch-choice $(BIN)/python
	echo $(TORCH) > $(VENV)/.torch
	$(BIN)/python tools/lockfile.py select --torch $(TORCH) requirements.lock > $(VENV)/requirements.lock
ifeq ($(TORCH),cpu)
	$(BIN)/python tools/lockfile.py cpu-wheels requirements.lock > $(VENV)/torch-cpu.txt
	$(BIN)/pip install -q --no-deps --index-url $(TORCH_CPU_INDEX) -r $(VENV)/torch-cpu.txt
endif
	$(BIN)/pip install -q --require-hashes --no-deps -r $(VENV)/requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

data: setup
	$(BIN)/python -m clothing_assets.fetch_data $(if $(DATA),--from $(DATA))

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp deploy/dagster.yaml $@

run: data $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster asset materialize -m clothing_assets.definitions --select '*'

dev: data $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dg dev

check: setup
	$(BIN)/dg check defs

# Both cores: a graph test spends most of its time starting processes and waiting for them,
# which two tests at once overlap. TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

test-fast: setup
	$(BIN)/python -m pytest clothing_assets_tests/unit -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# After changing dependencies in pyproject.toml: resolve the dev install without installing it,
# starting from constraints.txt's versions, and write constraints.txt and requirements.lock
# (with each file's sha256). Then run make setup and the tests, and commit both files.
lock: | $(BIN)/python
	$(BIN)/pip install -q --dry-run --ignore-installed --report $(VENV)/lock-report.json \
	    -c constraints.txt -e '.[dev]' pip setuptools
	$(BIN)/python tools/lockfile.py write $(VENV)/lock-report.json constraints.txt requirements.lock
