"""Create MLflow's database if it is absent, then become `mlflow server`.

`exec`, so that the container's stop signal reaches MLflow directly.
"""

import logging
import os
import sys

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

from mlflow_server.settings import MlflowServerSettings, get_settings

logger = logging.getLogger("mlflow_server")


def ensure_database(url: str, *, create: bool = True) -> bool:
    """Whether the database that `url` names exists on its server; with `create`, it is
    created when absent (and True)."""
    target = make_url(url)
    if not target.database:
        raise ValueError(f"MLFLOW_BACKEND_STORE_URI names no database: {target!r}")
    maintenance = target.set(drivername="postgresql", database="postgres")
    connection = psycopg2.connect(maintenance.render_as_string(hide_password=False))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (target.database,))
            if cursor.fetchone() is not None:
                return True
            if create:
                statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.database))
                cursor.execute(statement)
                logger.info("created database %s", target.database)
            return create
    finally:
        connection.close()


def sqlalchemy_url(url: str) -> str:
    """`url` with the psycopg2 driver named: SQLAlchemy 2.1 takes plain `postgresql://`
    to mean psycopg 3, which this image does not have."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def server_command(settings: MlflowServerSettings) -> list[str]:
    return [
        "mlflow",
        "server",
        # The backend store (with its password) goes by MLFLOW_BACKEND_STORE_URI, not by a
        # command-line argument that `ps` would show.
        # Clients read and write models through the server: no shared filesystem.
        "--serve-artifacts",
        "--artifacts-destination",
        settings.mlflow_artifacts_destination,
        "--host",
        settings.mlflow_server_host,
        "--port",
        str(settings.mlflow_server_port),
        "--workers",
        str(settings.mlflow_server_workers),
        "--allowed-hosts",
        settings.allowed_hosts(),
    ]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = get_settings()
    ensure_database(settings.mlflow_backend_store_uri)
    if "://" not in settings.mlflow_artifacts_destination:
        os.makedirs(settings.mlflow_artifacts_destination, exist_ok=True)
    # MLflow's job runner (GenAI evaluation jobs) starts 7 huey_consumer processes that leave
    # the server's process group and outlive it; the registry does not use it.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.environ["MLFLOW_BACKEND_STORE_URI"] = sqlalchemy_url(settings.mlflow_backend_store_uri)
    sys.stdout.flush()
    command = server_command(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
