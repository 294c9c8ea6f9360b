"""The API's own tables in PostgreSQL: idempotency keys and the audit log (api.audit),
beside the key store every service that checks keys shares (common.web.db).

Calls here block; the routes run them in a worker thread.
"""

import datetime as dt
import hmac
from dataclasses import dataclass

from api.audit import AUDIT_LOCK_ID, AUDIT_SCHEMA, GENESIS, Entry, Row, row_hash
from common.web.db import KEYS_SCHEMA, Database, new_key

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

    schema = KEYS_SCHEMA + IDEMPOTENCY_SCHEMA + AUDIT_SCHEMA

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
