#!/usr/bin/env bash
# What the end-to-end tests need before they start: the Docker engine (docker_setup.sh),
# Chromium, and the stack's images built (a cache hit when nothing changed; the e2e fixtures
# build them again). `make e2e-prepare` runs it.
#
# One at a time on the machine: a second run waits for the first, then finds everything
# ready. CI starts one in the background, beside lint and the unit tests, and `make test
# E2E=1` runs it again before its lanes: it waits there for the build instead of building
# the same images twice at once.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec 9>"${TMPDIR:-/tmp}/stack-e2e-prepare.lock"
flock 9
bash tests/e2e/docker_setup.sh
command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
# The values given here only satisfy the compose file's required variables, which no build
# reads.
POSTGRES_PASSWORD=unused PREFECT_DB_PASSWORD=unused MLFLOW_DB_PASSWORD=unused \
    APP_DB_PASSWORD=unused API_KEY=unused PREFECT_API_AUTH_STRING=unused DOCKER_GID=0 \
    TLS_KEY_GID=0 docker compose -p stack-e2e build
