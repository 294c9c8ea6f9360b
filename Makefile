# The stack's entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION = $(shell sed -n "s/^uv==\([0-9.]*\).*/\1/p" requirements-dev.lock)
# The services' packages, as the images put them on sys.path.
export PYTHONPATH := services/trainer:services/agent:services/api:services/devstack

.DEFAULT_GOAL := help
.PHONY: help venv dev test test-unit test-integration lint format bench bench-api bench-trigger lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	# Byte-compiled at install: this machine sets PYTHONDONTWRITEBYTECODE, and every cold
	# import of prefect and pandas would otherwise compile from source (seconds per process).
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements-dev.lock
	touch $@

venv: $(BIN)/.installed ## Create .venv and install the locked dependencies

dev: venv ## Run the whole stack as local processes (Ctrl-C stops it)
	$(BIN)/python -m devstack

test: venv ## Run every test: unit first, then integration (real Postgres, server, worker)
	$(BIN)/python -m pytest

test-unit: venv ## Only the fast unit tests
	$(BIN)/python -m pytest tests/unit

test-integration: venv ## Only the integration tests
	$(BIN)/python -m pytest tests/integration

lint: venv ## Check formatting and lint with ruff
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: venv ## Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## Training speed against the reference pipeline
	$(BIN)/python bench/train.py

bench-api: venv ## Trigger latency through the API, and read load, against Prefect's defaults
	$(BIN)/python bench/api.py

bench-trigger: venv ## Trigger-to-running: Prefect's defaults, our poll, our warm starts
	$(BIN)/python bench/trigger.py

lock: venv ## Re-resolve requirements*.lock from pyproject.toml
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 pyproject.toml --extra dev -c requirements.lock -o requirements-dev.lock

clean: ## Delete local state (var/: Postgres, Prefect, data, models) and .venv
	rm -rf var $(VENV)
