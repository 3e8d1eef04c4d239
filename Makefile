# make run   - create .venv, install, start the all-in-one server on the embedded default
# make test  - install what the tests need (system packages via apt-get when root) and run every test

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINT_DIRS := src tests $(wildcard bench)

.PHONY: run test lint typecheck pytest system-deps services bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/spoolvault run

system-deps:
	scripts/install-system-deps.sh

services: system-deps
	scripts/start-test-services.sh > .test-services.env

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_DIRS)
	$(BIN)/ruff format --check $(LINT_DIRS)

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	set -a && . ./.test-services.env && set +a && $(BIN)/python -m pytest

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python bench/spool_throughput.py

clean:
	rm -rf $(VENV) .test-services.env .mypy_cache .ruff_cache .pytest_cache
