#!/bin/sh
# The stack's roles, databases and grants (roles.psql), as the superuser. Idempotent: run by
# the postgres container when it initialises its volume (/docker-entrypoint-initdb.d), and
# again by `make upgrade` and `make restore` (`docker compose exec postgres sh
# /docker-entrypoint-initdb.d/10-roles.sh`), which bring an older or restored volume to the
# same roles. Local mode runs roles.psql itself (devstack.postgres).
: "${PREFECT_DB_PASSWORD:?the password of the role prefect (make env writes it to .env)}"
: "${MLFLOW_DB_PASSWORD:?the password of the role mlflow (make env writes it to .env)}"
: "${APP_DB_PASSWORD:?the password of the role app (make env writes it to .env)}"
# Over the container's Unix socket, where the superuser is trusted; the passwords reach psql
# through the environment (\getenv), not its command line.
psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres --file /docker-entrypoint-initdb.d/roles.psql
