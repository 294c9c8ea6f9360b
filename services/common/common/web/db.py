"""The key store in PostgreSQL (psycopg2, a thread-safe pool): the API keys every service that
checks keys reads (each with a role, an owner, an optional expiry, and only its SHA-256
stored), people's live sessions (the `stack_session` cookie; only its SHA-256 stored; the
API makes them, `api.db`), and the pool and schema set-up a service's own tables build on
(the API's idempotency keys and audit log).

Calls here block; the routes run them in a worker thread.
"""

import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
-- Roles, owners, expiry and revocation came later: a key stored before them (the one from
-- API_KEY, named `env`) is an admin's, owned by nobody in particular, that never expires.
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS role text NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS owner text NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS revoked_at timestamptz;
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_id ON api_keys (id);
"""
KEY_COLUMNS = "id, name, role, owner, created_at, expires_at, revoked_at"
# People (the API manages them: api.db, api.people) and their sessions. Here because every
# service that checks keys also accepts a person's session cookie, and so reads these.
PEOPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL UNIQUE,
    role           text NOT NULL,
    password_hash  text NOT NULL,  -- argon2id, a PHC string (the API hashes it)
    created_at     timestamptz NOT NULL DEFAULT now(),
    disabled_at    timestamptz
);
CREATE TABLE IF NOT EXISTS sessions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_sha256  text NOT NULL UNIQUE,
    user_id       uuid NOT NULL REFERENCES users (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX IF NOT EXISTS sessions_live ON sessions (expires_at) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id);
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
    return secrets.token_urlsafe(32)  # 256 random bits


@dataclass(frozen=True)
class ApiKey:
    """A key as stored, without its secret. `role` is a `common.web.auth.Role` value."""

    id: uuid.UUID
    name: str
    role: str
    owner: str
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    def refusal(self, now: dt.datetime) -> str | None:
        """Why the key is refused now (revoked, expired), or None: it is valid."""
        if self.revoked_at is not None:
            return f"the API key {self.name!r} was revoked at {self.revoked_at.isoformat()}"
        if self.expires_at is not None and self.expires_at <= now:
            return f"the API key {self.name!r} expired at {self.expires_at.isoformat()}"
        return None


@dataclass(frozen=True)
class LiveSession:
    """A session that may be used now (not revoked, not expired, its user not disabled):
    whose it is and what they may do. `role` is a `common.web.auth.Role` value."""

    id: uuid.UUID
    user: str
    role: str
    expires_at: dt.datetime


def _api_key(row: tuple[Any, ...]) -> ApiKey:
    """A row of KEY_COLUMNS (psycopg2 gives a uuid column as text)."""
    return ApiKey(uuid.UUID(str(row[0])), *row[1:])


# The name of the key API_KEY holds (stored at every start): configuration, rotated by
# changing API_KEY, so the API does not rotate or revoke it (other services check it too).
ENV_KEY = "env"


class KeyNameTakenError(ValueError):
    """A key of that name exists already (names are the actors of the audit log)."""


class Database:
    """A pool of connections to the stack's own database, and its API keys. A service with
    tables of its own extends `schema` (created at start by `prepare_database`)."""

    schema = KEYS_SCHEMA + PEOPLE_SCHEMA

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
        """Store a key's hash under `name` (an admin's), replacing the key that name had.
        Its role and revocation stay as they were: a revoked `env` key stays revoked."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO api_keys (name, key_sha256, role) VALUES (%s, %s, 'admin') "
                "ON CONFLICT (name) DO UPDATE SET key_sha256 = EXCLUDED.key_sha256",
                (name, hash_key(key)),
            )

    def key_hashes(self) -> dict[str, ApiKey]:
        """Every key (revoked and expired ones too, to say why they are refused), by the
        SHA-256 of its secret."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT key_sha256, {KEY_COLUMNS} FROM api_keys")
            return {row[0]: _api_key(row[1:]) for row in cursor.fetchall()}

    def live_sessions(self) -> dict[str, LiveSession]:
        """Every session usable now, by the SHA-256 of its token. A revoked or expired session,
        or one of a disabled user, is not here."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT s.token_sha256, s.id, u.name, u.role, s.expires_at "
                "FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL"
            )
            return {
                row[0]: LiveSession(uuid.UUID(str(row[1])), row[2], row[3], row[4])
                for row in cursor.fetchall()
            }

    def create_key(
        self, name: str, role: str, owner: str, expires_at: dt.datetime | None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret (shown once; only its hash is kept)."""
        secret = new_key()
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO api_keys (name, key_sha256, role, owner, expires_at) "
                "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING "
                f"RETURNING {KEY_COLUMNS}",
                (name, hash_key(secret), role, owner, expires_at),
            )
            row = cursor.fetchone()
        if row is None:
            raise KeyNameTakenError(f"a key named {name!r} exists already")
        return _api_key(row), secret

    def list_keys(self, limit: int, since: dt.datetime | None = None) -> list[ApiKey]:
        """Keys oldest first, created at `since` or later."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {KEY_COLUMNS} FROM api_keys "
                "WHERE %s::timestamptz IS NULL OR created_at >= %s "
                "ORDER BY created_at, id LIMIT %s",
                (since, since, limit),
            )
            return [_api_key(row) for row in cursor.fetchall()]

    def read_key(self, key_id: uuid.UUID) -> ApiKey | None:
        """One key (without its secret), or None."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", (str(key_id),))
            row = cursor.fetchone()
        return None if row is None else _api_key(row)

    def rotate_key(self, key_id: uuid.UUID) -> tuple[ApiKey, str] | None:
        """A new secret for a key that is not revoked (the old one stops working), or None."""
        secret = new_key()
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE api_keys SET key_sha256 = %s WHERE id = %s AND revoked_at IS NULL "
                f"RETURNING {KEY_COLUMNS}",
                (hash_key(secret), str(key_id)),
            )
            row = cursor.fetchone()
        return None if row is None else (_api_key(row), secret)

    def revoke_key(self, key_id: uuid.UUID) -> ApiKey | None:
        """Revoke a key (revoking it again keeps the first time), or None: no such key."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s "
                f"RETURNING {KEY_COLUMNS}",
                (str(key_id),),
            )
            row = cursor.fetchone()
        return None if row is None else _api_key(row)


def prepare_database(database: Database, api_key: str | None) -> None:
    """Create the tables and store the first key (as `env`), waiting for PostgreSQL to
    accept us. Run by every service that checks keys, at start."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        try:
            database.create_schema()
            if api_key is not None:
                database.store_key(ENV_KEY, api_key)
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
