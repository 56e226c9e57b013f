# The README's commands. `make run` sets up and materializes every asset on the embedded
# default; `make test` sets up and runs the tests. DATA=<folder> links an existing copy of
# clothing-dataset-small instead of downloading it.
PYTHON ?= python3
VENV ?= .venv
DATA ?=
BIN := $(VENV)/bin
DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# only the commands that keep run history use it; the tests make their own instances
run dev: export DAGSTER_HOME := $(DAGSTER_HOME)
# dg compares the active venv with the project's and warns when none is active
dev check: export VIRTUAL_ENV := $(abspath $(VENV))

.PHONY: setup data run dev check test test-fast lint lock

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.cfg constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
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

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest clothing_assets_tests/unit -m "not slow"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# after changing dependencies in pyproject.toml: resolve once, run the tests, commit both files
lock: setup
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip freeze --exclude-editable | grep -v '^clothing' > constraints.body
	{ sed -n '/^#/p' constraints.txt; cat constraints.body; } > constraints.new
	mv constraints.new constraints.txt && rm constraints.body
