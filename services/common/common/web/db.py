"""The key store in PostgreSQL (psycopg2, a thread-safe pool): the API keys every service that
checks keys reads, and the pool and schema set-up a service's own tables build on (the API's
idempotency keys).

Calls here block; the routes run them in a worker thread.
"""

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import anyio
import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.pool import PoolError, ThreadedConnectionPool

from common.web.problems import unavailable

KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name        text PRIMARY KEY,
    key_sha256  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""
# Creating tables from several processes at once (API replicas, serving) can race; one lock
# serialises it.
SCHEMA_LOCK_ID = 7_391_204
STARTUP_SECONDS = 60.0
POOL_WAIT_SECONDS = 10.0

logger = logging.getLogger(__name__)
T = TypeVar("T")
D = TypeVar("D", bound="Database")


async def blocking(call: Callable[..., T], *args: Any) -> T:
    """Run a database call in a worker thread; the database away is a 503."""
    try:
        return await anyio.to_thread.run_sync(call, *args)
    except (psycopg2.OperationalError, psycopg2.InterfaceError, PoolError) as error:
        raise unavailable("the database", error) from error


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return secrets.token_urlsafe(32)


class Database:
    """A pool of connections to the stack's own database, and its API keys. A service with
    tables of its own extends `schema` (created at start by `prepare_database`)."""

    schema = KEYS_SCHEMA

    def __init__(self, url: str, *, max_connections: int = 10) -> None:
        self.pool = ThreadedConnectionPool(1, max_connections, url, connect_timeout=5)
        # psycopg2's pool fails at once when every connection is out; a burst of requests
        # (50 at once) waits its turn here instead.
        self._slots = threading.BoundedSemaphore(max_connections)

    def close(self) -> None:
        self.pool.closeall()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        if not self._slots.acquire(timeout=POOL_WAIT_SECONDS):
            raise PoolError(f"no database connection free within {POOL_WAIT_SECONDS:.0f} s")
        try:
            conn = self.pool.getconn()
            broken = False
            try:
                conn.autocommit = True
                yield conn
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                broken = True
                raise
            finally:
                self.pool.putconn(conn, close=broken or conn.closed != 0)
        finally:
            self._slots.release()

    def ping(self) -> None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 1")

    def create_schema(self) -> None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_ID,))
            try:
                cursor.execute(self.schema)
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK_ID,))

    # -- API keys --------------------------------------------------------------------------

    def store_key(self, name: str, key: str) -> None:
        """Store a key's hash under `name`, replacing the key that name had."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO api_keys (name, key_sha256) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET key_sha256 = EXCLUDED.key_sha256",
                (name, hash_key(key)),
            )

    def key_hashes(self) -> dict[str, str]:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT key_sha256, name FROM api_keys")
            return dict(cursor.fetchall())


def prepare_database(database: Database, api_key: str | None) -> None:
    """Create the tables and store the first key (as `env`), waiting for PostgreSQL to
    accept us. Run by every service that checks keys, at start."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            database.create_schema()
            if api_key is not None:
                database.store_key("env", api_key)
            return
        except psycopg2.OperationalError as error:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the database at DATABASE_URL did not accept connections within "
                    f"{STARTUP_SECONDS:.0f} s: {error}"
                ) from error
            logger.warning("waiting for the database: %s", str(error).strip())
            time.sleep(1)


async def open_database(url: str, api_key: str | None, kind: type[D]) -> D:
    """A pool on `url` (a `kind` of Database: its tables), its tables made and `api_key`
    stored: what each service that checks keys opens in its lifespan (and closes at its end)."""
    database = kind(url)
    await anyio.to_thread.run_sync(prepare_database, database, api_key)
    return database
