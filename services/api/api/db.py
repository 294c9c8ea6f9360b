"""The API's tables in PostgreSQL (psycopg2, a thread-safe pool): API keys and idempotency keys.

Calls here block; the routes run them in a worker thread.
"""

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import psycopg2
from psycopg2.extensions import connection as Connection
from psycopg2.pool import PoolError, ThreadedConnectionPool

from api.problems import unavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    name        text PRIMARY KEY,
    key_sha256  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    caller       text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    nonce        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (caller, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_created_at ON idempotency_keys (created_at);
-- The run a key is bound to; NULL while its request has not created one (or failed to).
-- Keys claimed before the column existed had their runs: mark them bound (the nil UUID).
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'idempotency_keys' AND column_name = 'flow_run_id') THEN
        ALTER TABLE idempotency_keys ADD COLUMN flow_run_id uuid;
        UPDATE idempotency_keys SET flow_run_id = '00000000-0000-0000-0000-000000000000';
    END IF;
END $$;
"""
# Creating tables from several API processes at once can race; one lock serialises it.
SCHEMA_LOCK_ID = 7_391_204
STARTUP_SECONDS = 60.0
POOL_WAIT_SECONDS = 10.0

logger = logging.getLogger("api.db")
T = TypeVar("T")


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


@dataclass(frozen=True)
class Claim:
    """The idempotency record a request got: its own, or the one an earlier request made."""

    nonce: str
    same_request: bool
    bound: bool  # an earlier request created the run: this one is a replay


class Database:
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
                cursor.execute(SCHEMA)
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

    # -- idempotency keys ----------------------------------------------------------------

    def claim(self, caller: str, key: str, request_hash: str, retention_hours: float) -> Claim:
        """Record (caller, key) for this request, or find the record an earlier one made.

        A key binds only to a run that exists (`bind`): a record older than the retention,
        or one whose request created no run and which now comes with a different request,
        is replaced as if it were absent. Concurrent claims of one key for the same request
        all see the first one's nonce: the unique key serialises them, and Prefect's own
        idempotency key (which carries the nonce) then gives them one run.
        """
        with self.connection() as conn, conn.cursor() as cursor:
            nonce = new_key()
            cursor.execute(
                "INSERT INTO idempotency_keys AS k (caller, key, request_hash, nonce) "
                "VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (caller, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, "
                "  nonce = EXCLUDED.nonce, created_at = now(), flow_run_id = NULL "
                "  WHERE k.created_at < now() - make_interval(secs => %s) "
                "     OR (k.flow_run_id IS NULL AND k.request_hash <> EXCLUDED.request_hash) "
                "RETURNING nonce",
                (caller, key, request_hash, nonce, retention_hours * 3600),
            )
            if cursor.fetchone() is not None:
                return Claim(nonce, same_request=True, bound=False)
            cursor.execute(
                "SELECT request_hash, nonce, flow_run_id IS NOT NULL FROM idempotency_keys "
                "WHERE caller = %s AND key = %s",
                (caller, key),
            )
            stored_hash, stored_nonce, bound = cursor.fetchone()
            return Claim(
                stored_nonce,
                same_request=hmac.compare_digest(stored_hash, request_hash),
                bound=bound,
            )

    def bind(self, caller: str, key: str, request_hash: str, nonce: str, flow_run_id: str) -> bool:
        """Bind the claim to the run its request created; True when this call bound it (the
        request is the key's first creation), False when it was bound already (a replay).
        A claim replaced in the meantime is recreated: the run exists, so the key holds it."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO idempotency_keys AS k (caller, key, request_hash, nonce, flow_run_id) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (caller, key) DO UPDATE SET flow_run_id = EXCLUDED.flow_run_id "
                "  WHERE k.nonce = EXCLUDED.nonce AND k.flow_run_id IS NULL "
                "RETURNING 1",
                (caller, key, request_hash, nonce, flow_run_id),
            )
            return cursor.fetchone() is not None

    def forget_expired(self, retention_hours: float) -> int:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => %s)",
                (retention_hours * 3600,),
            )
            return cursor.rowcount


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


async def open_database(url: str, api_key: str | None) -> Database:
    """A pool on `url`, its tables made and `api_key` stored: what each service that checks
    keys opens in its lifespan (and closes at its end)."""
    database = Database(url)
    await anyio.to_thread.run_sync(prepare_database, database, api_key)
    return database
