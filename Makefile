# The stack's entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION = $(shell sed -n "s/^uv==\([0-9.]*\).*/\1/p" requirements-dev.lock)
# The services' packages, as the images put them on sys.path; and tests/ for the helpers
# the benchmarks share with the tests (tests/testkit/).
export PYTHONPATH := services/common:services/trainer:services/agent:services/autoscaler:services/api:services/devstack:services/mlflow:services/serving:tests

.DEFAULT_GOAL := help
.PHONY: help venv dev test e2e-prepare test-unit test-integration test-faults lint format bench bench-registry bench-serve bench-api bench-trigger bench-autoscale bench-door bench-startup lock clean \
	env up up-ha down logs deploy scale run e2e backup restore upgrade
COMPOSE ?= docker compose
# The autoscaler container joins the Docker socket's group (compose reads DOCKER_GID).
DOCKER_SOCKET ?= /var/run/docker.sock
DOCKER_GID ?= $(shell stat -c %g $(DOCKER_SOCKET) 2>/dev/null)
ifneq ($(DOCKER_GID),)
export DOCKER_GID
endif
N ?= 3
DATE ?= 2021-08-15

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# Byte-compiled at install: CI machines set PYTHONDONTWRITEBYTECODE, and every cold import
# of prefect and pandas would otherwise compile from source (seconds per process).
$(BIN)/.installed: requirements-dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(BIN)/python --require-hashes requirements-dev.lock
	touch $@

# MLflow's server gets an environment of its own: full mlflow cannot share Prefect's pins.
MLFLOW_VENV := .venv-mlflow
$(MLFLOW_VENV)/bin/.installed: services/mlflow/requirements.lock $(BIN)/.installed
	$(PYTHON) -m venv $(MLFLOW_VENV)
	$(BIN)/uv pip sync --quiet --compile-bytecode --python $(MLFLOW_VENV)/bin/python --require-hashes $<
	touch $@

venv: $(BIN)/.installed $(MLFLOW_VENV)/bin/.installed ## Create .venv (and .venv-mlflow for MLflow's server) from the locks

dev: venv ## Run the whole stack as local processes (Ctrl-C stops it)
	$(BIN)/python -m devstack

# The integration tests, the fault suite and (E2E=1, what CI runs) make e2e's suites each
# start a stack of their own (free ports, their own PostgreSQL; the e2e one on Docker) and
# mostly wait on it: side by side, as lanes, they take the time of the longest. With E2E=1
# Docker is prepared (`make e2e-prepare`) after the unit tests, which CI runs beside the
# build it started first. The faults lane runs `make dev`'s own fault tests
# (test_make_dev.py, stacks of their own) first, then the faults on one stack.
# Each lane's pytest has a base directory of its own, not /tmp/pytest-of-<user>: a pytest
# session that starts makes that one private again (0700), which cut the other lane's
# PostgreSQL (run as the embedded_postgres user) off its data directory mid-run.
LANES_TMP := $(or $(TMPDIR),/tmp)/stack-test-lanes-$(shell printf '%s' '$(CURDIR)' | cksum | cut -d' ' -f1)
# make e2e's suites; $(1): options of both pytest runs (both stacks publish the door's port).
e2e_tests = $(BIN)/python -m pytest tests/e2e/test_door.py tests/e2e/test_compose.py $(1) && $(BIN)/python -m pytest tests/e2e/test_ha.py $(1)
# The unit tests on every core (pytest-xdist), before the lanes start.
UNIT_TESTS = $(BIN)/python -m pytest -n auto tests/unit
test: venv ## Run every test: unit first (on every core), then integration (real Postgres, server, worker) and faults side by side (E2E=1: and make e2e's, a third lane)
	$(UNIT_TESTS)
	$(if $(E2E),bash tests/e2e/prepare.sh)
	mkdir -p $(LANES_TMP)
	$(BIN)/python -m testkit.lanes \
		integration="$(BIN)/python -m pytest tests/integration --basetemp=$(LANES_TMP)/integration" \
		faults="$(BIN)/python -m pytest tests/faults/test_make_dev.py tests/faults/test_faults.py --basetemp=$(LANES_TMP)/faults" \
		$(if $(E2E),e2e="$(call e2e_tests,--basetemp=$(LANES_TMP)/e2e)")

test-unit: venv ## Only the fast unit tests (on every core)
	$(UNIT_TESTS)

test-integration: venv ## Only the integration tests
	$(BIN)/python -m pytest tests/integration

test-faults: venv ## Only the fault suite: kill agents, stop Postgres, kill the server, mid-run
	$(BIN)/python -m pytest tests/faults

lint: venv ## Check formatting and lint with ruff, and types with mypy
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: venv ## Format and fix with ruff
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## Training speed against the reference pipeline
	$(BIN)/python bench/train.py

bench-registry: venv ## What MLflow tracking, registration and promotion add to a training run
	$(BIN)/python bench/registry.py

bench-serve: venv ## Serving latency and throughput against MLflow's own scoring server
	$(BIN)/python bench/serve.py

bench-api: venv ## Trigger latency through the API, and read load, against Prefect's defaults
	$(BIN)/python bench/api.py

bench-trigger: venv ## Trigger-to-running: Prefect's defaults, our poll, push, our warm starts
	$(BIN)/python bench/trigger.py

bench-startup: venv ## make dev from the command to its banner: fresh state and existing state
	$(BIN)/python bench/startup.py

bench-autoscale: venv ## Drain a burst: autoscaler vs 1 fixed agent vs max fixed; plots bench/autoscale.png
	$(BIN)/python bench/autoscale.py

bench-door: venv ## What the front door adds to GET /runs/{id}, against the running Compose stack (make up)
	$(BIN)/python bench/door.py

lock: venv ## Re-resolve requirements*.lock: the stack's, then each image's against it
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 pyproject.toml -o requirements.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 pyproject.toml --extra dev -c requirements.lock -o requirements-dev.lock
	$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 services/mlflow/requirements.in -o services/mlflow/requirements.lock
	for service in server api trainer agent serving; do \
		(cd services/$$service && ../../$(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
			requirements.in -c ../../requirements.lock -o requirements.lock) || exit 1; \
	done

# .env: random secrets, once; a secret an older .env lacks is added, none is replaced. Then
# the front door's certificate (certs/gateway.crt and .key, self-signed) unless
# TLS_CERT_FILE/TLS_KEY_FILE name yours, and TLS_KEY_GID in .env (devstack/tls.py).
# Runs each time (`make up` too): it keeps whatever exists.
env: $(BIN)/.installed ## Create .env with random secrets and the TLS certificate (never overwritten; a secret it lacks is added)
	@if [ ! -e .env ]; then \
		$(BIN)/python -c "$$ENV_SECRETS" .env && \
		if [ -n "$(DOCKER_GID)" ]; then echo "DOCKER_GID=$(DOCKER_GID)" >> .env; \
			else echo "# DOCKER_GID=   # group id of the Docker socket, for the autoscaler" >> .env; fi && \
		echo "created .env with random secrets (see .env.example for the rest)"; \
	else $(BIN)/python -c "$$ENV_SECRETS" .env; fi
	@$(BIN)/python -m devstack.tls --env-file .env

# The random secrets of .env: the PostgreSQL superuser's, each service's database role's
# (docs/settings.md), Prefect's auth string and the first API key. Those a .env lacks are appended (a .env from
# before the database roles gets their passwords); none is ever replaced.
define ENV_SECRETS
import os, re, secrets, sys
path = sys.argv[1]
text = open(path).read() if os.path.exists(path) else ""
have = set(re.findall(r"^([A-Z_]+)=", text, re.M))
names = ["POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "APP_DB_PASSWORD"]
lines = [f"{n}={secrets.token_hex(24)}" for n in names if n not in have]
lines += [] if "API_KEY" in have else [f"API_KEY={secrets.token_urlsafe(32)}"]
# Prefect's basic auth, user:password: its server requires it, our services send it.
auth = f"PREFECT_API_AUTH_STRING=prefect:{secrets.token_hex(24)}"
lines += [] if "PREFECT_API_AUTH_STRING" in have else [auth]
if lines:
    os.umask(0o077)
    with open(path, "a") as file:
        file.write(("" if not text or text.endswith("\n") else "\n") + "\n".join(lines) + "\n")
    print(f"{path}: added {', '.join(line.split('=')[0] for line in lines)}")
endef
export ENV_SECRETS

up: env ## Build and start the Docker Compose stack in the background
	$(COMPOSE) up -d --build

up-ha: env ## The stack with a highly available Prefect server (docker-compose.ha.yaml)
	$(COMPOSE) -f docker-compose.yaml -f docker-compose.ha.yaml up -d --build

down: ## Stop the Compose stack (volumes kept; `docker compose down -v` deletes them)
	$(COMPOSE) down

logs: ## Follow the Compose services' logs
	$(COMPOSE) logs -f --tail=100

deploy: env ## Re-register the work pool and deployments (the trainer container, once)
	$(COMPOSE) run --rm --build trainer

scale: env ## Run N agent containers now: make scale N=3 (the autoscaler then follows the backlog)
	$(COMPOSE) up -d --no-recreate --scale agent=$(N) agent

admin: venv ## People, keys and the audit log, on DATABASE_URL: make admin ARGS='users create --name alice --role admin' (users create|list|set-password|disable, keys create|list|rotate|revoke, audit verify)
	@$(BIN)/python -m api.admin $(ARGS)

run: venv ## Start a run through the API and wait for it: make run DATE=2021-08-15 (or FLOW=probe PARAMS='{"seconds": 5}')
	@FLOW='$(FLOW)' PARAMS='$(PARAMS)' DATE='$(DATE)' $(BIN)/python -m devstack.run

# Which stack backup, restore and upgrade work on: STACK=compose or STACK=dev; unset, the
# Compose project when it has a postgres container, else make dev's STATE_DIR.
STACK ?=
FILE ?=
BACKUP = COMPOSE='$(COMPOSE)' $(BIN)/python -m devstack.backup $(if $(STACK),--stack $(STACK)) $(if $(FILE),--file '$(FILE)')

backup: venv ## One archive of the databases, MLflow's artifacts and the stores: make backup [FILE=backups/x.tar.gz] [STACK=compose|dev]
	@$(BACKUP) backup

restore: venv ## Bring a stopped or fresh stack back to an archive: make restore FILE=backups/<time>.tar.gz [STACK=compose|dev]
	@$(BACKUP) restore

upgrade: venv ## A backup, then Prefect's and MLflow's migrations, then start the stack [STACK=compose|dev]
	@$(BACKUP) upgrade

e2e: venv e2e-prepare ## End-to-end: a real Docker engine runs the Compose stack (installs what it needs)
	$(call e2e_tests)

e2e-prepare: ## What make e2e needs before its tests: the Docker engine, Chromium, the built images
	bash tests/e2e/prepare.sh

clean: ## Delete local state (var/: Postgres, Prefect, MLflow, data, models) and the venvs
	rm -rf var $(VENV) $(MLFLOW_VENV)
