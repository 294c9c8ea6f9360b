"""The API's own tables in PostgreSQL: idempotency keys, the audit log (api.audit), and the
people and their sessions (api.people; the tables are common.web.db's, which every service
that checks keys reads), beside the key store every service that checks keys shares.

Calls here block; the routes run them in a worker thread.
"""

import datetime as dt
import hmac
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import psycopg2
import psycopg2.extras

from api.audit import AUDIT_LOCK_ID, AUDIT_SCHEMA, GENESIS, Entry, Row, row_hash
from api.backfills import BACKFILLS_SCHEMA, Backfill
from api.people import Session, User
from api.webhooks import WEBHOOKS_SCHEMA, Delivery, Due, Message, Subscription
from common.web.db import KEYS_SCHEMA, PEOPLE_SCHEMA, Database, hash_key, new_key

USER_COLUMNS = "id, name, role, created_at, disabled_at"
SESSION_COLUMNS = "s.id, s.user_id, u.name, s.created_at, s.expires_at, s.revoked_at"
BACKFILL_COLUMNS = (
    "id, caller, request_id, flow, request, plan, status, cancel_requested, created_at, ended_at"
)
AUDIT_COLUMNS = "actor, role, method, route, target, request_id, outcome, id, at, prev_hash, hash"

IDEMPOTENCY_SCHEMA = """
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


@dataclass(frozen=True)
class Claim:
    """The idempotency record a request got: its own, or the one an earlier request made."""

    nonce: str
    same_request: bool
    bound: bool  # an earlier request created the run: this one is a replay


class ApiDatabase(Database):
    """The key store, the API's idempotency keys and its audit log."""

    schema = (
        KEYS_SCHEMA + PEOPLE_SCHEMA + IDEMPOTENCY_SCHEMA + AUDIT_SCHEMA + WEBHOOKS_SCHEMA
        + BACKFILLS_SCHEMA
    )  # fmt: skip

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
            row = cursor.fetchone()
            assert row is not None  # the insert above did nothing: the key is there
            stored_hash, stored_nonce, bound = row
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

    # -- people and sessions (api.people) --------------------------------------------------

    def create_user(self, name: str, role: str, password_hash: str) -> User:
        """A new user; raises UserNameTakenError when the name is taken (by anyone, disabled
        too: names are the actors of the audit log)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s) "
                f"ON CONFLICT (name) DO NOTHING RETURNING {USER_COLUMNS}",
                (name, role, password_hash),
            )
            row = cursor.fetchone()
        if row is None:
            raise UserNameTakenError(f"a user named {name!r} exists already")
        return _user(row)

    def list_users(self, limit: int, since: dt.datetime | None = None) -> list[User]:
        """Users oldest first, created at `since` or later."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {USER_COLUMNS} FROM users "
                "WHERE %s::timestamptz IS NULL OR created_at >= %s "
                "ORDER BY created_at, id LIMIT %s",
                (since, since, limit),
            )
            return [_user(row) for row in cursor.fetchall()]

    def read_user(self, user_id: uuid.UUID) -> User | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT {USER_COLUMNS} FROM users WHERE id = %s", (str(user_id),))
            row = cursor.fetchone()
        return None if row is None else _user(row)

    def user_by_name(self, name: str) -> User | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(f"SELECT {USER_COLUMNS} FROM users WHERE name = %s", (name,))
            row = cursor.fetchone()
        return None if row is None else _user(row)

    def login_hash(self, name: str) -> tuple[User, str] | None:
        """An enabled user and their password hash, for a login; None: no such user, or
        disabled."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {USER_COLUMNS}, password_hash FROM users "
                "WHERE name = %s AND disabled_at IS NULL",
                (name,),
            )
            row = cursor.fetchone()
        return None if row is None else (_user(row[:-1]), row[-1])

    def update_user(
        self, user_id: uuid.UUID, role: str | None, password_hash: str | None
    ) -> User | None:
        """Change a user's role and/or password (None: keep). A new password ends the user's
        sessions (whoever held one must log in with it). None: no such user. Raises
        UserDisabledError for a disabled user."""
        with self.connection() as conn:
            conn.autocommit = False
            try:
                with conn.cursor() as cursor:
                    cursor.execute(
                        "SELECT name, disabled_at FROM users WHERE id = %s FOR UPDATE",
                        (str(user_id),),
                    )
                    found = cursor.fetchone()
                    if found is not None and found[1] is not None:
                        raise UserDisabledError(f"{found[0]} is disabled")
                    cursor.execute(
                        "UPDATE users SET role = coalesce(%s, role), "
                        "password_hash = coalesce(%s, password_hash) "
                        f"WHERE id = %s RETURNING {USER_COLUMNS}",
                        (role, password_hash, str(user_id)),
                    )
                    row = cursor.fetchone()
                    if row is not None and password_hash is not None:
                        _end_sessions(cursor, user_id)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return None if row is None else _user(row)

    def disable_user(self, user_id: uuid.UUID) -> User | None:
        """Disable a user (disabling again keeps the first time) and end their sessions;
        None: no such user."""
        with self.connection() as conn:
            conn.autocommit = False
            try:
                with conn.cursor() as cursor:
                    cursor.execute(
                        "UPDATE users SET disabled_at = coalesce(disabled_at, now()) "
                        f"WHERE id = %s RETURNING {USER_COLUMNS}",
                        (str(user_id),),
                    )
                    row = cursor.fetchone()
                    if row is not None:
                        _end_sessions(cursor, user_id)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return None if row is None else _user(row)

    def create_session(self, user_id: uuid.UUID, ttl_seconds: float) -> tuple[Session, str]:
        """A new session for the user and its token (given to the browser once; only its
        SHA-256 is kept). Sessions expired a day ago or more are deleted on the way."""
        token = new_key()
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "DELETE FROM sessions WHERE expires_at < now() - interval '1 day' "
                "OR revoked_at < now() - interval '1 day'"
            )
            cursor.execute(
                "WITH s AS (INSERT INTO sessions (token_sha256, user_id, expires_at) "
                "VALUES (%s, %s, now() + make_interval(secs => %s)) RETURNING *) "
                f"SELECT {SESSION_COLUMNS} FROM s JOIN users u ON u.id = s.user_id",
                (hash_key(token), str(user_id), ttl_seconds),
            )
            row = cursor.fetchone()
        assert row is not None  # the user exists: the caller just read them
        return _session(row), token

    def list_sessions(
        self, limit: int, since: dt.datetime | None = None, live_only: bool = True
    ) -> list[Session]:
        """Sessions oldest first, created at `since` or later; `live_only`: not revoked, not
        expired."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions s JOIN users u ON u.id = s.user_id "
                "WHERE (%(since)s::timestamptz IS NULL OR s.created_at >= %(since)s) "
                "AND (NOT %(live)s OR (s.revoked_at IS NULL AND s.expires_at > now())) "
                "ORDER BY s.created_at, s.id LIMIT %(limit)s",
                {"since": since, "live": live_only, "limit": limit},
            )
            return [_session(row) for row in cursor.fetchall()]

    def revoke_session(self, session_id: uuid.UUID) -> Session | None:
        """End a session (ending it again keeps the first time); None: no such session."""
        return self._end_session("id", str(session_id))

    def end_session(self, token: str) -> Session | None:
        """End the session whose token this is (a logout); None: no such session."""
        return self._end_session("token_sha256", hash_key(token))

    def _end_session(self, column: Literal["id", "token_sha256"], value: str) -> Session | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "WITH s AS (UPDATE sessions SET revoked_at = coalesce(revoked_at, now()) "
                f"WHERE {column} = %s RETURNING *) "
                f"SELECT {SESSION_COLUMNS} FROM s JOIN users u ON u.id = s.user_id",
                (value,),
            )
            row = cursor.fetchone()
        return None if row is None else _session(row)

    # -- audit log (api.audit) ------------------------------------------------------------

    def append_audit(self, entry: Entry) -> Row:
        """Append `entry` to the chain, under the lock that keeps the chain one line."""
        with self.connection() as conn:
            conn.autocommit = False
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK_ID,))
                    cursor.execute("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                    last = cursor.fetchone()
                    prev_hash = last[0] if last else GENESIS
                    cursor.execute("SELECT nextval('audit_log_id_seq'), clock_timestamp()")
                    row_id, at = cursor.fetchone()  # type: ignore[misc]
                    digest = row_hash(entry, row_id, at, prev_hash)
                    cursor.execute(
                        f"INSERT INTO audit_log ({AUDIT_COLUMNS}) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            entry.actor,
                            entry.role,
                            entry.method,
                            entry.route,
                            entry.target,
                            entry.request_id,
                            entry.outcome,
                            row_id,
                            at,
                            prev_hash,
                            digest,
                        ),
                    )
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
        return Row(**vars(entry), id=row_id, at=at, prev_hash=prev_hash, hash=digest)

    def audit_page(
        self,
        limit: int,
        up_to: int | None = None,
        actor: str | None = None,
        method: str | None = None,
        since: dt.datetime | None = None,
    ) -> list[Row]:
        """Rows newest first, from id `up_to` down, filtered."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log "
                "WHERE (%(up_to)s::bigint IS NULL OR id <= %(up_to)s) "
                "AND (%(actor)s::text IS NULL OR actor = %(actor)s) "
                "AND (%(method)s::text IS NULL OR method = %(method)s) "
                "AND (%(since)s::timestamptz IS NULL OR at >= %(since)s) "
                "ORDER BY id DESC LIMIT %(limit)s",
                {"up_to": up_to, "actor": actor, "method": method, "since": since, "limit": limit},
            )
            return [Row(*row) for row in cursor.fetchall()]

    def audit_rows(self, after: int, limit: int) -> list[Row]:
        """Rows oldest first, with ids above `after` (for `verify`)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),
            )
            return [Row(*row) for row in cursor.fetchall()]

    # -- webhooks (api.webhooks) -------------------------------------------------------------

    def create_webhook(
        self, url: str, events: list[str], flow: str | None, secret: str, created_by: str
    ) -> Subscription:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhooks (id, url, events, flow, secret, created_by) "
                f"VALUES (%s, %s, %s, %s, %s, %s) RETURNING {WEBHOOK_COLUMNS}",
                (str(uuid.uuid4()), url, events, flow, secret, created_by),
            )
            row = cursor.fetchone()
            assert row is not None  # INSERT ... RETURNING gives its row
            return _subscription(row)

    def list_webhooks(self, limit: int, since: dt.datetime | None = None) -> list[Subscription]:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL "
                "AND created_at >= coalesce(%s::timestamptz, '-infinity') "
                "ORDER BY created_at, id LIMIT %s",
                (since, limit),
            )
            return [_subscription(row) for row in cursor.fetchall()]

    def read_webhook(self, webhook_id: uuid.UUID) -> Subscription | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = %s AND deleted_at IS NULL",
                (str(webhook_id),),
            )
            row = cursor.fetchone()
            return _subscription(row) if row else None

    def delete_webhook(self, webhook_id: uuid.UUID) -> bool:
        """Stop a subscription: its pending deliveries are given up. False: none such."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE webhooks SET deleted_at = now() WHERE id = %s AND deleted_at IS NULL",
                (str(webhook_id),),
            )
            deleted = cursor.rowcount == 1
            cursor.execute(
                "UPDATE webhook_deliveries SET state = 'failed' "
                "WHERE webhook_id = %s AND state = 'pending'",
                (str(webhook_id),),
            )
            return deleted

    def enqueue(self, message: Message) -> int:
        """One delivery of `message` per live subscription it matches (made before it
        happened); a message recorded already is not again. How many were new. In the same
        statement, the events count as read as far as it (the cursor a restarted API reads
        back from)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "WITH made AS ("
                "  INSERT INTO webhook_deliveries "
                "    (webhook_id, message_id, event_type, run_id, occurred, body) "
                "  SELECT id, %(id)s, %(type)s, %(run)s, %(at)s, %(body)s FROM webhooks "
                "  WHERE deleted_at IS NULL AND %(type)s = ANY (events) "
                "    AND (flow IS NULL OR flow = %(flow)s) AND created_at <= %(at)s "
                "  ON CONFLICT (webhook_id, message_id) DO NOTHING RETURNING 1), "
                "read AS ("
                "  INSERT INTO webhook_cursor (id, occurred) VALUES (1, %(at)s) "
                "  ON CONFLICT (id) DO UPDATE"
                "  SET occurred = greatest(webhook_cursor.occurred, EXCLUDED.occurred)) "
                "SELECT count(*) FROM made",
                {
                    "id": message.id,
                    "type": message.type,
                    "run": str(message.run_id) if message.run_id else None,
                    "at": message.occurred,
                    "body": psycopg2.extras.Json(message.body()),
                    "flow": message.flow,
                },
            )
            row = cursor.fetchone()
            return int(row[0]) if row else 0

    def claim_due(self, limit: int, lease_seconds: float) -> list[Due]:
        """Up to `limit` deliveries due now, each the oldest pending one of its run for its
        subscription (in order per run), leased for `lease_seconds`."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "WITH due AS ("
                "  SELECT d.id FROM webhook_deliveries d"
                "  WHERE d.state = 'pending' AND d.next_attempt_at <= now()"
                "    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e"
                "      WHERE e.webhook_id = d.webhook_id AND e.state = 'pending'"
                "        AND d.run_id IS NOT NULL AND e.run_id = d.run_id"
                "        AND (e.occurred, e.id) < (d.occurred, d.id))"
                "  ORDER BY d.next_attempt_at, d.id LIMIT %s"
                "  FOR UPDATE OF d SKIP LOCKED) "
                "UPDATE webhook_deliveries w"
                "  SET next_attempt_at = now() + make_interval(secs => %s) "
                "FROM due, webhooks h WHERE w.id = due.id AND h.id = w.webhook_id "
                "RETURNING w.id, w.webhook_id, h.url, h.secret, w.message_id, w.body, w.attempts",
                (limit, lease_seconds),
            )
            return [
                Due(uuid.UUID(str(r[0])), uuid.UUID(str(r[1])), *r[2:]) for r in cursor.fetchall()
            ]

    def record_attempt(
        self,
        delivery_id: uuid.UUID,
        status: int | None,
        error: str | None,
        duration_ms: float,
        retry_in: float | None,
    ) -> None:
        """An attempt's outcome: delivered (no error), pending again in `retry_in` s, or
        given up (an error and no retry)."""
        state = "delivered" if error is None else "pending" if retry_in is not None else "failed"
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms) "
                "VALUES (%s, %s, %s, %s)",
                (str(delivery_id), status, error, duration_ms),
            )
            cursor.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, state = %s,"
                "  delivered_at = CASE WHEN %s = 'delivered' THEN now() END,"
                "  next_attempt_at = now() + make_interval(secs => %s) "
                "WHERE id = %s",
                (state, state, retry_in or 0, str(delivery_id)),
            )

    def list_deliveries(
        self, webhook_id: uuid.UUID, limit: int, since: dt.datetime | None = None
    ) -> list[Delivery]:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "SELECT d.id, d.message_id, d.event_type, d.run_id, d.occurred, d.created_at,"
                "  d.state, d.next_attempt_at, d.delivered_at,"
                "  coalesce((SELECT json_agg(json_build_object('at', a.at, 'status', a.status,"
                "      'error', a.error, 'duration_ms', a.duration_ms) ORDER BY a.at)"
                "    FROM webhook_attempts a WHERE a.delivery_id = d.id), '[]'::json) "
                "FROM webhook_deliveries d WHERE d.webhook_id = %s "
                "  AND d.created_at >= coalesce(%s::timestamptz, '-infinity') "
                "ORDER BY d.created_at, d.id LIMIT %s",
                (str(webhook_id), since, limit),
            )
            return [_delivery(row) for row in cursor.fetchall()]

    def redeliver(self, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery | None:
        """Send a delivery again now, whatever its state (its attempts are kept)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE webhook_deliveries d SET state = 'pending', next_attempt_at = now(),"
                "  delivered_at = NULL FROM webhooks h "
                "WHERE d.id = %s AND d.webhook_id = %s AND h.id = d.webhook_id"
                "  AND h.deleted_at IS NULL RETURNING d.id",
                (str(delivery_id), str(webhook_id)),
            )
            if cursor.fetchone() is None:
                return None
        return next(
            (d for d in self.list_deliveries(webhook_id, 10_000) if d.id == delivery_id), None
        )

    def cursor(self) -> dt.datetime | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute("SELECT occurred FROM webhook_cursor WHERE id = 1")
            row = cursor.fetchone()
            return row[0] if row else None

    # -- backfills (api.backfills) ---------------------------------------------------------

    def create_backfill(
        self, request_hash: str, caller: str, request_id: str, flow: str,
        request: dict[str, Any], plan: dict[str, Any],
    ) -> tuple[Backfill, bool]:  # fmt: skip
        """The backfill of `request_hash`: made now (True), or the one an earlier request
        made (False; racing requests make one)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "INSERT INTO backfills (id, request_hash, caller, request_id, flow, request, plan) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_hash) DO NOTHING "
                f"RETURNING {BACKFILL_COLUMNS}",
                (
                    str(uuid.uuid4()), request_hash, caller, request_id, flow,
                    psycopg2.extras.Json(request), psycopg2.extras.Json(plan),
                ),
            )  # fmt: skip
            row = cursor.fetchone()
            if row is not None:
                return _backfill(row), True
        found = self.backfill_by_hash(request_hash)
        assert found is not None  # the insert met it
        return found, False

    def backfill_by_hash(self, request_hash: str) -> Backfill | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE request_hash = %s",
                (request_hash,),
            )
            row = cursor.fetchone()
            return _backfill(row) if row else None

    def read_backfill(self, backfill_id: uuid.UUID) -> Backfill | None:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {BACKFILL_COLUMNS} FROM backfills WHERE id = %s", (str(backfill_id),)
            )
            row = cursor.fetchone()
            return _backfill(row) if row else None

    def list_backfills(self, limit: int, since: dt.datetime | None = None) -> list[Backfill]:
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {BACKFILL_COLUMNS} FROM backfills "
                "WHERE created_at >= coalesce(%s::timestamptz, '-infinity') "
                "ORDER BY created_at, id LIMIT %s",
                (since, limit),
            )
            return [_backfill(row) for row in cursor.fetchall()]

    def cancel_backfill(self, backfill_id: uuid.UUID) -> Backfill | None:
        """Ask a running backfill to stop (its backfiller cancels its runs); one that has
        ended stays as it is. None: no such backfill."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE backfills SET cancel_requested = true, "
                "  status = CASE WHEN status = 'running' THEN 'cancelling' ELSE status END "
                "WHERE id = %s AND status IN ('running', 'cancelling') ",
                (str(backfill_id),),
            )
        return self.read_backfill(backfill_id)

    def claim_backfills(
        self, holder: uuid.UUID, lease_seconds: float, limit: int
    ) -> list[Backfill]:
        """The running (or cancelling) backfills no other process holds, leased to
        `holder` for `lease_seconds`, oldest first; up to `limit` of them, those whose
        lease ends first (so that past `limit`, each gets its turn)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE backfills SET lease_holder = %(holder)s, "
                "  lease_until = now() + make_interval(secs => %(lease)s) "
                "WHERE id IN (SELECT id FROM backfills "
                "  WHERE status IN ('running', 'cancelling') "
                "    AND (lease_until < now() OR lease_holder = %(holder)s) "
                "  ORDER BY lease_until, created_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED) "
                f"RETURNING {BACKFILL_COLUMNS}",
                {"holder": str(holder), "lease": lease_seconds, "limit": limit},
            )
            return sorted((_backfill(row) for row in cursor.fetchall()), key=_created)

    def renew_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, lease_seconds: float
    ) -> Backfill | None:
        """The backfill as it is now, its lease extended, if `holder` holds it still (None:
        another process took it over, or it has ended)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE backfills SET lease_until = now() + make_interval(secs => %s) "
                "WHERE id = %s AND lease_holder = %s AND lease_until > now() "
                "  AND status IN ('running', 'cancelling') "
                f"RETURNING {BACKFILL_COLUMNS}",
                (lease_seconds, str(backfill_id), str(holder)),
            )
            row = cursor.fetchone()
            return _backfill(row) if row else None

    def open_backfills(self, flow: str) -> list[Backfill]:
        """The flow's backfills still running."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                f"SELECT {BACKFILL_COLUMNS} FROM backfills "
                "WHERE flow = %s AND status = 'running' ORDER BY created_at",
                (flow,),
            )
            return [_backfill(row) for row in cursor.fetchall()]

    def release_backfills(self, holder: uuid.UUID) -> None:
        """Give up `holder`'s leases (an API that stops): another process takes its
        backfills over at once, not after the lease."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE backfills SET lease_until = '-infinity' WHERE lease_holder = %s",
                (str(holder),),
            )

    def save_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, plan: dict[str, Any], status: str
    ) -> bool:
        """Store a turn's plan and status, if `holder` still holds the lease (a cancel that
        came during the turn keeps a running backfill `cancelling`)."""
        with self.connection() as conn, conn.cursor() as cursor:
            cursor.execute(
                "UPDATE backfills SET plan = %s, status = CASE WHEN cancel_requested "
                "  AND %s = 'running' THEN 'cancelling' ELSE %s END, "
                "  ended_at = CASE WHEN %s IN ('completed', 'failed', 'cancelled') "
                "    THEN coalesce(ended_at, now()) END "
                "WHERE id = %s AND lease_holder = %s AND lease_until > now()",
                (
                    psycopg2.extras.Json(plan), status, status, status,
                    str(backfill_id), str(holder),
                ),
            )  # fmt: skip
            return cursor.rowcount == 1


class UserNameTakenError(ValueError):
    """A user of that name exists already."""


class UserDisabledError(ValueError):
    """The user is disabled: a disabled person is not changed (their name stays in the
    audit log, and nothing can make them able to log in again)."""


WEBHOOK_COLUMNS = "id, url, events, flow, created_by, created_at"


def _backfill(row: tuple[Any, ...]) -> Backfill:
    return Backfill(*row)


def _created(backfill: Backfill) -> dt.datetime:
    return backfill.created_at


def _subscription(row: tuple[Any, ...]) -> Subscription:
    return Subscription(uuid.UUID(str(row[0])), row[1], list(row[2]), *row[3:])


def _delivery(row: tuple[Any, ...]) -> Delivery:
    run_id = uuid.UUID(str(row[3])) if row[3] else None
    next_at = row[7] if row[6] == "pending" else None
    return Delivery(
        uuid.UUID(str(row[0])),
        row[1],
        row[2],
        run_id,
        row[4],
        row[5],
        row[6],
        next_at,
        row[8],
        row[9],
    )


def _user(row: tuple[Any, ...]) -> User:
    """A row of USER_COLUMNS (psycopg2 gives a uuid column as text)."""
    return User(uuid.UUID(str(row[0])), *row[1:])


def _session(row: tuple[Any, ...]) -> Session:
    """A row of SESSION_COLUMNS."""
    return Session(uuid.UUID(str(row[0])), uuid.UUID(str(row[1])), *row[2:])


def _end_sessions(cursor: psycopg2.extensions.cursor, user_id: uuid.UUID) -> None:
    cursor.execute(
        "UPDATE sessions SET revoked_at = now() WHERE user_id = %s AND revoked_at IS NULL",
        (str(user_id),),
    )
