"""The audit log: every write through the API (POST and DELETE on runs and keys), allowed or
refused, appended after its response status is known, to a table chained by hash.

Each row's `hash` is the SHA-256 of the previous row's hash and a canonical encoding of the
row (`row_hash`); rows are appended under a transaction advisory lock, so the chain stays
one line across replicas. An edited row no longer matches its hash, and a deleted one
breaks the next row's `prev_hash`: `verify` names the first row that does not match
(`python -m api.admin audit verify`). Deleting the newest rows leaves a shorter, valid
chain: keep a copy of the newest hash elsewhere to detect that.

In the stack the table is not the API's: its database role may only INSERT and SELECT it
(services/postgres/initdb/roles.psql), so changing a row takes the superuser.

The middleware appends once the response has been sent, shielded from cancellation: the
client does not wait for it, and an entry is not lost when the client goes away.
"""

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.web.auth import Caller
from common.web.db import blocking
from common.web.requestid import current_request_id

# Made here only where no audit_log is found (tests, a DATABASE_URL of your own). The
# stack's PostgreSQL makes it beforehand (services/postgres/initdb/roles.psql, the same
# columns), in a schema `audit` the API's role does not own, where that role may only INSERT
# and SELECT: CREATE INDEX on it, even IF NOT EXISTS, would fail there (owner only).
AUDIT_SCHEMA = """
DO $$
BEGIN
    IF to_regclass('audit_log') IS NULL THEN
        CREATE TABLE audit_log (
            id          bigserial PRIMARY KEY,
            at          timestamptz NOT NULL,
            actor       text NOT NULL,
            role        text,
            method      text NOT NULL,
            route       text NOT NULL,
            target      text,
            request_id  text NOT NULL,
            outcome     integer NOT NULL,
            prev_hash   text NOT NULL,
            hash        text NOT NULL
        );
        CREATE INDEX audit_log_actor ON audit_log (actor, id);
    END IF;
END $$;
"""
# Taken for the append's transaction: one appender at a time, across replicas.
AUDIT_LOCK_ID = 7_391_205
GENESIS = "0" * 64  # the prev_hash of the first row
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ANONYMOUS = "anonymous"  # the actor of a request refused before its key was known

logger = logging.getLogger("api.audit")


@dataclass(frozen=True)
class Entry:
    """What happened, before the log gives it an id, a time and its place in the chain."""

    actor: str
    role: str | None
    method: str
    route: str
    target: str | None
    request_id: str
    outcome: int


@dataclass(frozen=True)
class Row(Entry):
    id: int = 0
    at: dt.datetime = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    prev_hash: str = GENESIS
    hash: str = GENESIS


def row_hash(entry: Entry, row_id: int, at: dt.datetime, prev_hash: str) -> str:
    """SHA-256 over the previous hash and the row's fields as canonical JSON (sorted keys,
    no spaces, the time in UTC to the microsecond)."""
    fields = {
        "actor": entry.actor,
        "role": entry.role,
        "method": entry.method,
        "route": entry.route,
        "target": entry.target,
        "request_id": entry.request_id,
        "outcome": entry.outcome,
        "id": row_id,
        "at": at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


Mismatch = tuple[int, str]  # the row's id, and what is wrong with it


def first_mismatch(rows: list[Row], prev_hash: str = GENESIS) -> Mismatch | None:
    """The first row (oldest first) that breaks the chain, and how; None: it holds."""
    for row in rows:
        if row.prev_hash != prev_hash:
            return row.id, "its prev_hash is not the previous row's hash (a row was removed?)"
        entry = Entry(**{k: v for k, v in asdict(row).items() if k in Entry.__dataclass_fields__})
        if row_hash(entry, row.id, row.at, row.prev_hash) != row.hash:
            return row.id, "its fields do not match its hash (the row was edited)"
        prev_hash = row.hash
    return None


class AuditSink(Protocol):
    """Where entries go (`api.db.ApiDatabase.append_audit`; a fake in tests). Blocking."""

    def append_audit(self, entry: Entry) -> Row: ...


class AuditMiddleware:
    """Appends an entry for each write to one of the app's routes, once its response is
    sent. The sink is `app.state.audit` (set in the lifespan; absent: nothing is logged)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        status = 499  # the client went away before a response started

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception:
            status = 500
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            sink = getattr(scope["app"].state, "audit", None) if "app" in scope else None
            if route is not None and sink is not None:
                await append(sink, entry(scope, route, status))


def entry(scope: Scope, route: str, status: int) -> Entry:
    state = scope.get("state", {})
    caller: Caller | None = state.get("caller")
    target = state.get("audit_target")
    if target is None:
        params = scope.get("path_params", {})
        target = next((printable(str(v)) for k, v in params.items() if k.endswith("_id")), None)
    return Entry(
        actor=caller.name if caller else ANONYMOUS,
        role=caller.role.value if caller else None,
        method=scope["method"],
        route=route,
        target=target,
        request_id=current_request_id(),
        outcome=status,
    )


def printable(text: str, limit: int = 200) -> str:
    """A path parameter as the log keeps it: control characters escaped (PostgreSQL stores no
    NUL), at most `limit` characters."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)[:limit]


async def append(sink: AuditSink, item: Entry) -> None:
    """Append `item`, shielded from cancellation (a client that goes away does not lose an
    entry); an entry that cannot be stored is logged instead (the response is decided)."""
    with anyio.CancelScope(shield=True):
        try:
            await blocking(sink.append_audit, item)
        except Exception as error:
            logger.error("audit entry not stored (%s): %s", error, asdict(item))


def verify(read: Callable[[int, int], list[Row]], batch: int = 1000) -> tuple[int, Mismatch | None]:
    """Walk the whole chain, oldest first, `batch` rows at a time (`read(after_id, limit)`):
    how many rows were checked, and the first that does not match (None: the chain holds)."""
    checked, after, prev_hash = 0, 0, GENESIS
    while rows := read(after, batch):
        mismatch = first_mismatch(rows, prev_hash)
        if mismatch is not None:
            return checked + [r.id for r in rows].index(mismatch[0]), mismatch
        checked += len(rows)
        after, prev_hash = rows[-1].id, rows[-1].hash
    return checked, None
