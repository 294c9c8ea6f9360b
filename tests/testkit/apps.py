"""The API and serving apps in-process, their I/O replaced by in-memory fakes through
`app.dependency_overrides` (tests/unit/test_api_routers_*.py, test_serving_routers_*.py).

- `FakeDatabase`: the key store (keys with roles, expiry, revocation), people and their
  sessions, the idempotency table, the audit log and `ping`, as `api.db.ApiDatabase` answers
  them; `down = True` makes every call fail as PostgreSQL away does (a 503).
- `FakePrefect`: a `PrefectGateway` whose Prefect is a few dicts (its caches are the real
  ones); `down = True` makes Prefect unreachable.
- `FakeRegistry`: the MLflow registry `Champions` reads (`champion` alias, model loading).
- `api_app` and `serving_app` build each app with `create_app(settings)` and override its
  dependencies with these; no lifespan runs, so nothing is opened.
"""

import dataclasses
import datetime as dt
import functools
import time
import uuid
from typing import Any

import httpx
import numpy as np
import pandas as pd
import psycopg2
from fastapi import FastAPI
from prefect.client.schemas.objects import FlowRun, Log, State, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.states import Cancelling

from api import people
from api.audit import GENESIS, Entry, Row, row_hash
from api.backfills import Backfill
from api.db import Claim, UserDisabledError, UserNameTakenError
from api.deps import get_database, get_door_auth, get_idempotency_keys, get_prefect
from api.idempotency import IdempotencyKeys
from api.main import authenticators
from api.main import create_app as create_api
from api.prefect_gateway import RETRY_OF, PrefectGateway
from api.run_events import RunEvents
from api.settings import ApiSettings
from api.webhooks import Delivery, Due, Message, Subscription
from common.web.auth import Authenticator, KeyChecker, SessionChecker, authenticator
from common.web.db import ApiKey, KeyNameTakenError, LiveSession, hash_key, new_key
from common.web.problems import Problem, unavailable
from common.web.ratelimit import RateLimiter
from serving.champions import Champions
from serving.deps import get_champions
from serving.main import create_app as create_serving
from serving.registry import model_name
from serving.settings import ServingSettings

KEY = "test-key-" + "k" * 32
AUTH = {"Authorization": f"Bearer {KEY}"}
UNUSED_DATABASE = "postgresql://unused/x"


def _database_away() -> psycopg2.OperationalError:
    return psycopg2.OperationalError("connection refused")


class FakeDatabase:
    """One key (`KEY`, named "ci", an admin's: `keys` are more, each an admin's), an
    idempotency table with `api.db`'s rules, and an audit log chained as `api.db` chains it."""

    def __init__(self, keys: dict[str, str] | None = None) -> None:
        self.keys: dict[str, ApiKey] = {}  # by hash
        for key, name in ({KEY: "ci"} if keys is None else keys).items():
            self.keys[hash_key(key)] = ApiKey(uuid.uuid4(), name, "admin", "", _now())
        # (caller, key) -> [request hash, nonce, run id or None]
        self.idempotency: dict[tuple[str, str], list[Any]] = {}
        self.audit: list[Row] = []
        # People: by id, with their password hashes; sessions by the hash of their token.
        self.users: dict[uuid.UUID, people.User] = {}
        self.password_hashes: dict[uuid.UUID, str] = {}
        self.sessions: dict[str, people.Session] = {}
        # Webhooks (api.webhooks): subscriptions with their secrets, the outbox, the cursor.
        self.webhooks: dict[uuid.UUID, tuple[Subscription, str]] = {}
        self.deleted_webhooks: set[uuid.UUID] = set()
        self.outbox: dict[uuid.UUID, dict[str, Any]] = {}
        self.event_cursor: dt.datetime | None = None
        # Backfills (api.backfills), by id, with their request hashes and leases.
        self.backfills: dict[uuid.UUID, Backfill] = {}
        self.backfill_hashes: dict[str, uuid.UUID] = {}
        self.backfill_leases: dict[uuid.UUID, tuple[uuid.UUID, float]] = {}
        self.down = False

    def add_key(
        self, name: str, role: str, *, expires_at: dt.datetime | None = None, owner: str = "t"
    ) -> str:
        """A key of `role`, and its secret."""
        return self.create_key(name, role, owner, expires_at)[1]

    def _reach(self) -> None:
        if self.down:
            raise _database_away()

    def ping(self) -> None:
        self._reach()

    def key_hashes(self) -> dict[str, ApiKey]:
        self._reach()
        return dict(self.keys)

    def create_key(
        self, name: str, role: str, owner: str, expires_at: dt.datetime | None
    ) -> tuple[ApiKey, str]:
        self._reach()
        if any(key.name == name for key in self.keys.values()):
            raise KeyNameTakenError(f"a key named {name!r} exists already")
        secret = new_key()
        key = ApiKey(uuid.uuid4(), name, role, owner, _now(), expires_at)
        self.keys[hash_key(secret)] = key
        return key, secret

    def list_keys(self, limit: int, since: dt.datetime | None = None) -> list[ApiKey]:
        self._reach()
        keys = sorted(self.keys.values(), key=lambda k: (k.created_at, str(k.id)))
        return [k for k in keys if since is None or k.created_at >= since][:limit]

    def _find(self, key_id: uuid.UUID) -> tuple[str, ApiKey] | None:
        return next(((h, k) for h, k in self.keys.items() if k.id == key_id), None)

    def read_key(self, key_id: uuid.UUID) -> ApiKey | None:
        self._reach()
        found = self._find(key_id)
        return None if found is None else found[1]

    def rotate_key(self, key_id: uuid.UUID) -> tuple[ApiKey, str] | None:
        self._reach()
        found = self._find(key_id)
        if found is None or found[1].revoked_at is not None:
            return None
        secret = new_key()
        self.keys[hash_key(secret)] = self.keys.pop(found[0])
        return found[1], secret

    def revoke_key(self, key_id: uuid.UUID) -> ApiKey | None:
        self._reach()
        found = self._find(key_id)
        if found is None:
            return None
        stored, key = found
        if key.revoked_at is None:
            key = self.keys[stored] = dataclasses.replace(key, revoked_at=_now())
        return key

    def add_user(self, name: str, role: str, password: str) -> people.User:
        """A user of `role` with `password` (hashed, as the API stores it; one hash per
        password for all the tests' users, as argon2 takes a tenth of a second)."""
        return self.create_user(name, role, _hashed(password))

    def create_user(self, name: str, role: str, password_hash: str) -> people.User:
        self._reach()
        if any(u.name == name for u in self.users.values()):
            raise UserNameTakenError(f"a user named {name!r} exists already")
        user = people.User(uuid.uuid4(), name, role, _now())
        self.users[user.id], self.password_hashes[user.id] = user, password_hash
        return user

    def list_users(self, limit: int, since: dt.datetime | None = None) -> list[people.User]:
        self._reach()
        users = sorted(self.users.values(), key=lambda u: (u.created_at, str(u.id)))
        return [u for u in users if since is None or u.created_at >= since][:limit]

    def read_user(self, user_id: uuid.UUID) -> people.User | None:
        self._reach()
        return self.users.get(user_id)

    def user_by_name(self, name: str) -> people.User | None:
        self._reach()
        return next((u for u in self.users.values() if u.name == name), None)

    def login_hash(self, name: str) -> tuple[people.User, str] | None:
        user = self.user_by_name(name)
        if user is None or user.disabled_at is not None:
            return None
        return user, self.password_hashes[user.id]

    def update_user(
        self, user_id: uuid.UUID, role: str | None, password_hash: str | None
    ) -> people.User | None:
        self._reach()
        user = self.users.get(user_id)
        if user is None:
            return None
        if user.disabled_at is not None:
            raise UserDisabledError(f"{user.name} is disabled")
        user = self.users[user_id] = dataclasses.replace(user, role=role or user.role)
        if password_hash is not None:
            self.password_hashes[user_id] = password_hash
            self._end_sessions(user_id)
        return user

    def disable_user(self, user_id: uuid.UUID) -> people.User | None:
        self._reach()
        user = self.users.get(user_id)
        if user is None:
            return None
        if user.disabled_at is None:
            user = self.users[user_id] = dataclasses.replace(user, disabled_at=_now())
        self._end_sessions(user_id)
        return user

    def _end_sessions(self, user_id: uuid.UUID) -> None:
        for digest, session in self.sessions.items():
            if session.user_id == user_id and session.revoked_at is None:
                self.sessions[digest] = dataclasses.replace(session, revoked_at=_now())

    def create_session(self, user_id: uuid.UUID, ttl_seconds: float) -> tuple[people.Session, str]:
        self._reach()
        token, now = new_key(), _now()
        user = self.users[user_id]
        session = people.Session(
            uuid.uuid4(), user_id, user.name, now, now + dt.timedelta(seconds=ttl_seconds)
        )
        self.sessions[hash_key(token)] = session
        return session, token

    def list_sessions(
        self, limit: int, since: dt.datetime | None = None, live_only: bool = True
    ) -> list[people.Session]:
        self._reach()
        now = _now()
        found = sorted(self.sessions.values(), key=lambda s: (s.created_at, str(s.id)))
        return [
            s
            for s in found
            if (since is None or s.created_at >= since)
            and (not live_only or (s.revoked_at is None and s.expires_at > now))
        ][:limit]

    def revoke_session(self, session_id: uuid.UUID) -> people.Session | None:
        self._reach()
        for digest, session in self.sessions.items():
            if session.id == session_id:
                if session.revoked_at is None:
                    session = self.sessions[digest] = dataclasses.replace(
                        session, revoked_at=_now()
                    )
                return session
        return None

    def end_session(self, token: str) -> people.Session | None:
        self._reach()
        session = self.sessions.get(hash_key(token))
        return None if session is None else self.revoke_session(session.id)

    def live_sessions(self) -> dict[str, LiveSession]:
        self._reach()
        now = _now()
        return {
            digest: LiveSession(s.id, s.user, self.users[s.user_id].role, s.expires_at)
            for digest, s in self.sessions.items()
            if s.revoked_at is None
            and s.expires_at > now
            and self.users[s.user_id].disabled_at is None
        }

    def append_audit(self, entry: Entry) -> Row:
        self._reach()
        prev_hash = self.audit[-1].hash if self.audit else GENESIS
        row_id, at = len(self.audit) + 1, _now()
        digest = row_hash(entry, row_id, at, prev_hash)
        row = Row(**vars(entry), id=row_id, at=at, prev_hash=prev_hash, hash=digest)
        self.audit.append(row)
        return row

    def audit_page(
        self,
        limit: int,
        up_to: int | None = None,
        actor: str | None = None,
        method: str | None = None,
        since: dt.datetime | None = None,
    ) -> list[Row]:
        self._reach()
        rows = [
            r
            for r in reversed(self.audit)
            if (up_to is None or r.id <= up_to)
            and actor in (None, r.actor)
            and method in (None, r.method)
            and (since is None or r.at >= since)
        ]
        return rows[:limit]

    def audit_rows(self, after: int, limit: int) -> list[Row]:
        self._reach()
        return [r for r in self.audit if r.id > after][:limit]

    def claim(self, caller: str, key: str, request_hash: str, retention_hours: float) -> Claim:
        self._reach()
        row = self.idempotency.get((caller, key))
        if row is None or (row[2] is None and row[0] != request_hash):
            row = self.idempotency[(caller, key)] = [request_hash, new_key(), None]
            return Claim(row[1], same_request=True, bound=False)
        return Claim(row[1], same_request=row[0] == request_hash, bound=row[2] is not None)

    def bind(self, caller: str, key: str, request_hash: str, nonce: str, flow_run_id: str) -> bool:
        self._reach()
        row = self.idempotency.setdefault((caller, key), [request_hash, nonce, None])
        if row[1] != nonce or row[2] is not None:
            return False
        row[2] = flow_run_id
        return True

    # -- webhooks: api.db's rules, in memory ---------------------------------------------

    def create_webhook(
        self, url: str, events: list[str], flow: str | None, secret: str, created_by: str
    ) -> Subscription:
        self._reach()
        made = Subscription(uuid.uuid4(), url, events, flow, created_by, _now())
        self.webhooks[made.id] = (made, secret)
        return made

    def list_webhooks(self, limit: int, since: dt.datetime | None = None) -> list[Subscription]:
        self._reach()
        live = [w for w, _ in self.webhooks.values() if w.id not in self.deleted_webhooks]
        live = [w for w in live if since is None or w.created_at >= since]
        return sorted(live, key=lambda w: (w.created_at, w.id))[:limit]

    def read_webhook(self, webhook_id: uuid.UUID) -> Subscription | None:
        self._reach()
        if webhook_id in self.deleted_webhooks or webhook_id not in self.webhooks:
            return None
        return self.webhooks[webhook_id][0]

    def delete_webhook(self, webhook_id: uuid.UUID) -> bool:
        if self.read_webhook(webhook_id) is None:
            return False
        self.deleted_webhooks.add(webhook_id)
        for row in self.outbox.values():
            if row["webhook_id"] == webhook_id and row["state"] == "pending":
                row["state"] = "failed"
        return True

    def enqueue(self, message: Message) -> int:
        self._reach()
        self.event_cursor = max(self.event_cursor or message.occurred, message.occurred)
        made = 0
        for subscription, _ in self.webhooks.values():
            matches = (
                subscription.id not in self.deleted_webhooks
                and message.type in subscription.events
                and subscription.flow in (None, message.flow)
                and subscription.created_at <= message.occurred
            )
            known = any(
                r["webhook_id"] == subscription.id and r["message_id"] == message.id
                for r in self.outbox.values()
            )
            if matches and not known:
                delivery_id = uuid.uuid4()
                self.outbox[delivery_id] = {
                    "id": delivery_id, "webhook_id": subscription.id, "message_id": message.id,
                    "type": message.type, "run_id": message.run_id, "occurred": message.occurred,
                    "body": message.body(), "created_at": _now(), "state": "pending",
                    "attempts": [], "next_attempt_at": _now(), "delivered_at": None,
                }  # fmt: skip
                made += 1
        return made

    def claim_due(self, limit: int, lease_seconds: float) -> list[Due]:
        self._reach()
        now, due = _now(), []
        pending = [r for r in self.outbox.values() if r["state"] == "pending"]
        for row in sorted(pending, key=lambda r: (r["next_attempt_at"], str(r["id"]))):
            earlier = any(
                r["webhook_id"] == row["webhook_id"] and row["run_id"] is not None
                and r["run_id"] == row["run_id"]
                and (r["occurred"], str(r["id"])) < (row["occurred"], str(row["id"]))
                for r in pending
            )  # fmt: skip
            if row["next_attempt_at"] <= now and not earlier and len(due) < limit:
                row["next_attempt_at"] = now + dt.timedelta(seconds=lease_seconds)
                subscription, secret = self.webhooks[row["webhook_id"]]
                due.append(
                    Due(
                        row["id"], subscription.id, subscription.url, secret,
                        row["message_id"], row["body"], len(row["attempts"]),
                    )
                )  # fmt: skip
        return due

    def record_attempt(
        self,
        delivery_id: uuid.UUID,
        status: int | None,
        error: str | None,
        duration_ms: float,
        retry_in: float | None,
    ) -> None:
        self._reach()
        row = self.outbox[delivery_id]
        row["attempts"].append(
            {"at": _now(), "status": status, "error": error, "duration_ms": duration_ms}
        )
        row["state"] = "delivered" if error is None else "pending" if retry_in else "failed"
        row["delivered_at"] = _now() if error is None else None
        row["next_attempt_at"] = _now() + dt.timedelta(seconds=retry_in or 0)

    def _delivery(self, row: dict[str, Any]) -> Delivery:
        next_at = row["next_attempt_at"] if row["state"] == "pending" else None
        return Delivery(
            row["id"], row["message_id"], row["type"], row["run_id"], row["occurred"],
            row["created_at"], row["state"], next_at, row["delivered_at"], list(row["attempts"]),
        )  # fmt: skip

    def list_deliveries(
        self, webhook_id: uuid.UUID, limit: int, since: dt.datetime | None = None
    ) -> list[Delivery]:
        self._reach()
        rows = [r for r in self.outbox.values() if r["webhook_id"] == webhook_id]
        rows = [r for r in rows if since is None or r["created_at"] >= since]
        rows.sort(key=lambda r: (r["created_at"], r["id"]))
        return [self._delivery(r) for r in rows[:limit]]

    def redeliver(self, webhook_id: uuid.UUID, delivery_id: uuid.UUID) -> Delivery | None:
        row = self.outbox.get(delivery_id)
        if row is None or row["webhook_id"] != webhook_id or not self.read_webhook(webhook_id):
            return None
        row.update(state="pending", next_attempt_at=_now(), delivered_at=None)
        return self._delivery(row)

    def cursor(self) -> dt.datetime | None:
        self._reach()
        return self.event_cursor

    def forget_expired(self, retention_hours: float) -> int:
        self._reach()
        return 0

    def create_backfill(
        self, request_hash: str, caller: str, request_id: str, flow: str,
        request: dict[str, Any], plan: dict[str, Any],
    ) -> tuple[Backfill, bool]:  # fmt: skip
        self._reach()
        if found := self.backfill_by_hash(request_hash):
            return found, False
        made = Backfill(
            uuid.uuid4(), caller, request_id, flow, request, plan, "running", False, _now(), None
        )
        self.backfills[made.id], self.backfill_hashes[request_hash] = made, made.id
        return dataclasses.replace(made), True

    def backfill_by_hash(self, request_hash: str) -> Backfill | None:
        self._reach()
        found = self.backfill_hashes.get(request_hash)
        return self.read_backfill(found) if found else None

    def read_backfill(self, backfill_id: uuid.UUID) -> Backfill | None:
        self._reach()
        found = self.backfills.get(backfill_id)
        return dataclasses.replace(found) if found else None

    def list_backfills(self, limit: int, since: dt.datetime | None = None) -> list[Backfill]:
        self._reach()
        found = sorted(self.backfills.values(), key=lambda b: (b.created_at, b.id))
        return [dataclasses.replace(b) for b in found if since is None or b.created_at >= since][
            :limit
        ]

    def cancel_backfill(self, backfill_id: uuid.UUID) -> Backfill | None:
        self._reach()
        found = self.backfills.get(backfill_id)
        if found and found.status in ("running", "cancelling"):
            found.cancel_requested, found.status = True, "cancelling"
        return self.read_backfill(backfill_id)

    def claim_backfills(
        self, holder: uuid.UUID, lease_seconds: float, limit: int
    ) -> list[Backfill]:
        self._reach()
        now = time.monotonic()
        leases = {b: self.backfill_leases.get(b, (holder, float("-inf"))) for b in self.backfills}
        free = [
            b for b in self.backfills.values()
            if b.status in ("running", "cancelling")
            and (leases[b.id][0] == holder or leases[b.id][1] < now)
        ]  # fmt: skip
        free.sort(key=lambda b: (leases[b.id][1], b.created_at))  # as api.db orders them
        for backfill in free[:limit]:
            self.backfill_leases[backfill.id] = (holder, now + lease_seconds)
        return sorted((dataclasses.replace(b) for b in free[:limit]), key=lambda b: b.created_at)

    def renew_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, lease_seconds: float
    ) -> Backfill | None:
        self._reach()
        held_by, until = self.backfill_leases.get(backfill_id, (None, 0.0))
        found = self.backfills.get(backfill_id)
        if held_by != holder or until < time.monotonic() or found is None:
            return None
        if found.status not in ("running", "cancelling"):
            return None
        self.backfill_leases[backfill_id] = (holder, time.monotonic() + lease_seconds)
        return dataclasses.replace(found)

    def open_backfills(self, flow: str) -> list[Backfill]:
        self._reach()
        found = [b for b in self.backfills.values() if b.flow == flow and b.status == "running"]
        return [dataclasses.replace(b) for b in sorted(found, key=lambda b: b.created_at)]

    def release_backfills(self, holder: uuid.UUID) -> None:
        self._reach()
        for backfill_id, (held_by, _) in list(self.backfill_leases.items()):
            if held_by == holder:
                del self.backfill_leases[backfill_id]

    def save_backfill(
        self, backfill_id: uuid.UUID, holder: uuid.UUID, plan: dict[str, Any], status: str
    ) -> bool:
        self._reach()
        held_by, until = self.backfill_leases.get(backfill_id, (None, 0.0))
        if held_by != holder or until < time.monotonic():
            return False
        found = self.backfills[backfill_id]
        found.plan = plan
        found.status = "cancelling" if found.cancel_requested and status == "running" else status  # type: ignore[assignment]
        if status in ("completed", "failed", "cancelled"):
            found.ended_at = found.ended_at or _now()
        return True


@functools.cache
def _hashed(password: str) -> str:
    return people.hash_password(password)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class FakePrefect(PrefectGateway):
    """The gateway over flows, runs, logs and tables held here instead of in Prefect."""

    def __init__(self, *, read_cache_seconds: float = 1.0) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]  # no client: every method that calls it is replaced
            "monthly",
            "training",
            read_cache_seconds=read_cache_seconds,
        )
        self.deployments: dict[str, DeploymentResponse] = {}
        self.flow_runs: dict[uuid.UUID, FlowRun] = {}
        self.log_lines: dict[uuid.UUID, list[Log]] = {}
        self.artifacts: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = {}
        self.by_key: dict[str, FlowRun] = {}
        # Each run's states as read so far; a test moves a run by setting `run.state`.
        self.state_history: dict[uuid.UUID, list[State]] = {}
        self.down = False

    def add_flow(self, name: str, parameters: dict[str, Any] | None = None) -> DeploymentResponse:
        """A deployment of flow `name` on the pool; `parameters`: name -> JSON schema."""
        deployment = DeploymentResponse(
            id=uuid.uuid4(),
            name=self.deployment_name,
            flow_id=uuid.uuid4(),
            description=f"The {name} flow.",
            parameter_openapi_schema={"type": "object", "properties": parameters or {}},
        )
        self._flow_names[deployment.flow_id] = name
        self.deployments[name] = deployment
        return deployment

    def add_run(
        self,
        flow: str,
        state: StateType = StateType.SCHEDULED,
        *,
        message: str | None = None,
        parameters: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        expected: dt.datetime | None = None,
    ) -> FlowRun:
        deployment = self.deployments[flow]
        now = dt.datetime.now(dt.UTC)
        run = FlowRun(
            id=uuid.uuid4(),
            name=f"run-{len(self.flow_runs)}",
            flow_id=deployment.flow_id,
            deployment_id=deployment.id,
            state=State(type=state, message=message, timestamp=expected or now),
            parameters=parameters or {},
            tags=tags or [],
            created=now,
            expected_start_time=expected or now,
        )
        self.flow_runs[run.id] = run
        self.state_history[run.id] = [run.state] if run.state else []
        return run

    def move(self, run_id: uuid.UUID, state: StateType, at: dt.datetime | None = None) -> None:
        """The run goes to `state` (at `at`, else now), in its history too."""
        self.flow_runs[run_id].state = State(type=state, timestamp=at or _now())
        self.state_history.setdefault(run_id, []).append(self.flow_runs[run_id].state)

    def add_log(self, run: FlowRun, message: str, at: dt.datetime) -> None:
        line = Log(name="flow", level=20, message=message, timestamp=at, flow_run_id=run.id)
        self.log_lines.setdefault(run.id, []).append(line)

    def _reach(self) -> None:
        if self.down:
            raise unavailable("the Prefect API", httpx.ConnectError("connection refused"))

    async def ready(self) -> str | None:
        return "ConnectError: connection refused" if self.down else None

    async def _read_flows(self) -> dict[str, DeploymentResponse]:
        self._reach()
        return dict(sorted(self.deployments.items()))

    async def create_run(
        self,
        deployment: DeploymentResponse,
        parameters: dict[str, Any],
        tags: list[str],
        idempotency_key: str | None,
    ) -> FlowRun:
        self._reach()
        if idempotency_key in self.by_key:
            return self.by_key[idempotency_key]
        flow = self._flow_names[deployment.flow_id]
        run = self.add_run(flow, parameters=parameters, tags=tags)
        if idempotency_key is not None:
            self.by_key[idempotency_key] = run
        return run

    async def run(self, run_id: uuid.UUID) -> FlowRun:
        self._reach()
        if run_id not in self.flow_runs:
            raise Problem(404, "not-found", f"run {run_id} not found")
        return self.flow_runs[run_id].model_copy()

    async def flow_name(self, flow_id: uuid.UUID) -> str:
        return self._flow_names[flow_id]

    async def runs(
        self,
        deployment_ids: list[uuid.UUID],
        state: StateType | None,
        since: dt.datetime | None,
        before: dt.datetime | None,
        limit: int,
    ) -> list[FlowRun]:
        self._reach()
        found = [
            run
            for run in self.flow_runs.values()
            if run.deployment_id in deployment_ids
            and (state is None or (run.state and run.state.type == state))
            and (since is None or run.expected_start_time >= since)  # type: ignore[operator]
            and (before is None or run.expected_start_time <= before)  # type: ignore[operator]
        ]
        found.sort(key=lambda run: run.expected_start_time, reverse=True)  # type: ignore[arg-type,return-value]
        return found[:limit]

    async def _read_states(self, run_id: uuid.UUID) -> list[State]:
        self._reach()
        state = self.flow_runs[run_id].state
        history = self.state_history.setdefault(run_id, [])
        if state is not None and (not history or history[-1].id != state.id):
            history.append(state)
        return list(history)

    async def runs_by_id(self, run_ids: list[uuid.UUID]) -> list[FlowRun]:
        self._reach()
        return [self.flow_runs[i].model_copy() for i in run_ids if i in self.flow_runs]

    async def deployment_runs(self, deployment_id: uuid.UUID, limit: int) -> list[FlowRun]:
        return await self.runs([deployment_id], None, None, None, limit)

    async def _read_retries(self, run_id: uuid.UUID) -> list[uuid.UUID]:
        self._reach()
        tag = f"{RETRY_OF}{run_id}"
        found = [run for run in self.flow_runs.values() if tag in run.tags]
        found.sort(key=lambda run: run.expected_start_time)  # type: ignore[arg-type,return-value]
        return [run.id for run in found]

    async def cancel(self, run_id: uuid.UUID) -> None:
        self._reach()
        self.flow_runs[run_id].state = Cancelling()
        self.records.forget(run_id)

    async def logs(self, run_id: uuid.UUID, since: dt.datetime | None, limit: int) -> list[Log]:
        self._reach()
        lines = sorted(self.log_lines.get(run_id, []), key=lambda line: line.timestamp)
        return [line for line in lines if since is None or line.timestamp >= since][:limit]

    async def tables(self, run_id: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
        self._reach()
        return self.artifacts.get(run_id, {})


def api_app(prefect: FakePrefect, database: FakeDatabase, **settings: Any) -> FastAPI:
    """The API over `prefect` and `database`; `settings` are ApiSettings fields."""
    options: dict[str, Any] = {"database_url": UNUSED_DATABASE, "api_key": KEY}
    app = create_api(ApiSettings(**(options | settings)))
    config: ApiSettings = app.state.settings
    keys = IdempotencyKeys(database, config.idempotency_retention_hours)
    app.dependency_overrides |= {
        get_prefect: lambda: prefect,
        get_database: lambda: database,
        get_idempotency_keys: lambda: keys,
    }
    auth, door_auth = authenticators(config, KeyChecker(database), SessionChecker(database))
    app.dependency_overrides[authenticator] = lambda: auth
    app.dependency_overrides[get_door_auth] = lambda: door_auth
    app.state.audit = database
    app.state.run_events = RunEvents()  # not following: a test wakes it with .wake(run_id)
    app.state.metrics.prefect_run_reads.set_function(lambda: prefect.records.fetches)
    return app


class ConstantModel:
    """A model that predicts `minutes` plus the pickup zone / 1000, for every trip."""

    def __init__(self, minutes: float, *, fails: bool = False) -> None:
        self.minutes, self.fails = minutes, fails
        self.feature_names_in_ = np.array(["pickup_location_id", "dropoff_location_id"])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        if self.fails:
            raise ValueError("this model cannot predict")
        return self.minutes + X["pickup_location_id"].to_numpy() / 1000


class FakeRegistry:
    """Registered versions by model name, and where `champion` points."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, str], ConstantModel] = {}
        self.champion: dict[str, str] = {}
        self.down = False

    def register(self, dataset: str, version: str, model: ConstantModel) -> None:
        """Register `model` as `version` of the dataset's model, and make it champion."""
        self.models[(model_name(dataset), version)] = model
        self.champion[model_name(dataset)] = version

    def champion_version(self, name: str) -> str | None:
        if self.down:
            raise ConnectionError("MLflow is away")
        return self.champion.get(name)

    def load(self, name: str, version: str) -> ConstantModel:
        return self.models[(name, version)]


def serving_app(
    registry: FakeRegistry, database: FakeDatabase | None = None, **settings: Any
) -> tuple[FastAPI, Champions]:
    """Serving over `registry` and `database`, and its champions (call `refresh` to load
    them, as the follower does); `settings` are ServingSettings fields."""
    options: dict[str, Any] = {
        "database_url": UNUSED_DATABASE,
        "api_key": KEY,
        "mlflow_tracking_uri": "http://127.0.0.1:1",  # never called: the registry is fake
    }
    app = create_serving(ServingSettings(**(options | settings)))
    config: ServingSettings = app.state.settings
    champions = Champions(config.datasets(), model_name, registry.champion_version, registry.load)
    store = database or FakeDatabase()
    auth = Authenticator(
        KeyChecker(store),
        RateLimiter(config.serving_rate_limit_per_second, config.serving_rate_limit_burst),
        insecure_dev_mode=config.api_insecure_dev_mode,
        sessions=SessionChecker(store),
    )
    app.dependency_overrides |= {get_champions: lambda: champions, authenticator: lambda: auth}
    return app, champions
