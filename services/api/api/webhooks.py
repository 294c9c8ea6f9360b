"""Webhooks: who is told what, and how a message reaches them. Plain functions and one loop.

A subscription (`POST /webhooks`) names a URL, event types and, optionally, a flow. When a
run ends (Prefect's flow-run events, followed by api.run_events and read back from Prefect
after a restart), one delivery per matching subscription is written to an outbox table in
PostgreSQL (`webhook_deliveries`; its unique message id makes a second writer, another API
replica or a replayed event, a no-op). `Deliverer` sends what is due, the oldest of each
run first, signed as the Standard Webhooks convention says (`webhook-id`,
`webhook-timestamp`, `webhook-signature`: HMAC-SHA256 with the subscription's secret, by the
`standardwebhooks` package), and records each attempt; a failed one is tried again after
RETRY_AFTER (scaled by API_WEBHOOK_FIRST_RETRY_SECONDS), for about a day, then given up.
A claimed delivery is leased, not locked: an API that dies mid-send leaves it to be sent
again after LEASE_SECONDS. So a message comes at least once; a repeat has the same
`webhook-id`.

Targets are `http(s)` URLs whose host resolves only to public addresses: loopback, private,
link-local and other reserved ranges (the stack's own network among them) are refused, when
subscribing and again before each send (the name may have changed), unless
API_WEBHOOKS_ALLOW_PRIVATE is set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook as Signer

from api.run_events import run_id_in, run_id_of
from common.contract import DRIFT_DETECTED, MODEL_PROMOTED

logger = logging.getLogger("api.webhooks")

EventType = Literal[
    "run.completed", "run.failed", "run.crashed", "run.cancelled", "model.promoted",
    "drift.detected",
]  # fmt: skip
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
# A final state type, as Prefect's flow-run events label it, and the event it is to us.
FINAL_EVENTS: dict[str, EventType] = {
    "COMPLETED": "run.completed",
    "FAILED": "run.failed",
    "CRASHED": "run.crashed",
    "CANCELLED": "run.cancelled",
}
# The events the flows emit (common.contract), and what they are to us.
FLOW_EVENTS: dict[str, EventType] = {
    MODEL_PROMOTED: "model.promoted",
    DRIFT_DETECTED: "drift.detected",
}


# Between attempts, in units of API_WEBHOOK_FIRST_RETRY_SECONDS (5 s by default: 5 s, 30 s,
# 2 min, 10 min, 30 min, 1 h, 2 h, 4 h, 8 h, 8 h; about a day in all), as Standard Webhooks'
# providers space theirs; then the delivery is given up (`failed`).
RETRY_AFTER = (1, 6, 24, 120, 360, 720, 1440, 2880, 5760, 5760)
LEASE_SECONDS = 60.0  # a claimed delivery is sent again after this if its sender vanished
SEND_TIMEOUT_SECONDS = 10.0
POLL_SECONDS = 1.0  # how often the deliverer looks for due deliveries
CATCH_UP_HOURS = 24.0  # after a restart, events read back from Prefect at most this far
CATCH_UP_SECONDS = 30.0  # how often events missed are read back, while any are
READ_BACK_AGAIN = (15.0, 60.0)  # and, after a start, read back again this long after it
CLAIM_BATCH = 20
MAX_ERROR = 500  # characters of a failed attempt's error or answer kept


def new_secret() -> str:
    """A subscription's signing secret, as Standard Webhooks writes them: whsec_ + base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, at: dt.datetime, body: str) -> str:
    """The `webhook-signature` header of `body` sent as `message_id` at `at`."""
    return Signer(secret).sign(message_id, at, body)


def retry_delay(attempts: int, first_seconds: float) -> float | None:
    """Seconds before the next attempt after `attempts` failed ones; None: give up."""
    if attempts > len(RETRY_AFTER):
        return None
    return RETRY_AFTER[attempts - 1] * first_seconds


# -- targets ---------------------------------------------------------------------------------


class TargetRefused(ValueError):
    """A URL a webhook may not be sent to; the message says why."""


def check_url(url: str) -> str:
    """`url` if it is an absolute http(s) URL with a host, else TargetRefused."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise TargetRefused("the URL has spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError as error:  # an unbalanced [ in the host, say
        raise TargetRefused(f"not a URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused("only http and https URLs are allowed")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL are not allowed (put them in its path)")
    try:
        parts.port  # noqa: B018 - raises on a port out of range
    except ValueError:
        raise TargetRefused("the URL's port is not valid") from None
    return url


def private(address: str) -> bool:
    """Whether an address is one a webhook may not reach: not globally routable."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


async def check_target(url: str, allow_private: bool, resolver: Resolve = resolve) -> None:
    """TargetRefused unless `url` may be sent to: http(s), and (unless `allow_private`) a
    host whose every address is public."""
    parts = urlsplit(check_url(url))
    if allow_private:
        return
    host = parts.hostname or ""
    try:
        addresses = await resolver(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as error:
        raise TargetRefused(f"{host} does not resolve ({error})") from None
    refused = [a for a in addresses if private(a)]
    if refused or not addresses:
        raise TargetRefused(
            f"{host} resolves to {', '.join(refused) or 'nothing'}: not a public address "
            "(loopback, private and the stack's own networks are refused unless "
            "API_WEBHOOKS_ALLOW_PRIVATE is set)"
        )


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """What one event tells subscribers: its type, its flow (for their filter), its run."""

    id: str  # the `webhook-id`: one per event, the same for every attempt
    type: EventType
    flow: str | None
    run_id: uuid.UUID | None
    occurred: dt.datetime
    data: dict[str, Any]

    def body(self) -> dict[str, Any]:
        """The JSON body, as Standard Webhooks shapes it: type, timestamp, data."""
        return {"type": self.type, "timestamp": self.occurred.isoformat(), "data": self.data}


def _related(event: Any, role: str) -> Any:
    return next((r for r in event.related if r.role == role), None)


def message_of(event: Any) -> Message | None:
    """The message a Prefect event makes: a flow run's final state, or an event the flows
    emit (model.promoted, drift.detected); None for any other."""
    if (event_type := FLOW_EVENTS.get(event.event)) is not None:
        run = _related(event, "flow-run")  # the run that emitted it
        run_id = run_id_in(str(run.id)) if run is not None else None
        if run is not None and run_id is None:
            return None
        details = dict(event.payload)
    else:
        resource = event.resource
        final = FINAL_EVENTS.get(resource.get("prefect.state-type", ""))
        if final is None or (run_id := run_id_of(event)) is None:
            return None
        event_type = final
        details = {
            "state": {
                "type": resource.get("prefect.state-type"),
                "name": resource.get("prefect.state-name"),
                "message": resource.get("prefect.state-message") or None,
            }
        }
    flow = _related(event, "flow")
    flow_name = flow.get("prefect.resource.name") if flow is not None else None
    data = {"run_id": str(run_id) if run_id else None, "flow": flow_name, **details}
    return Message(f"msg_{event.id}", event_type, flow_name, run_id, event.occurred, data)


# -- the outbox -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """A webhook as stored (never its secret)."""

    id: uuid.UUID
    url: str
    events: list[str]
    flow: str | None
    created_by: str
    created_at: dt.datetime


@dataclass(frozen=True)
class Delivery:
    """One message to one subscription, and its attempts so far."""

    id: uuid.UUID
    message_id: str
    type: str
    run_id: uuid.UUID | None
    occurred: dt.datetime
    created_at: dt.datetime
    state: str  # pending, delivered, failed
    next_attempt_at: dt.datetime | None
    delivered_at: dt.datetime | None
    attempts: list[dict[str, Any]]


@dataclass(frozen=True)
class Due:
    """A delivery claimed for sending."""

    id: uuid.UUID
    webhook_id: uuid.UUID
    url: str
    secret: str
    message_id: str
    body: dict[str, Any]
    attempts: int  # made before this one


class Outbox(Protocol):
    """The outbox tables (`api.db.ApiDatabase`). Blocking calls."""

    def enqueue(self, message: Message) -> int: ...

    def claim_due(self, limit: int, lease_seconds: float) -> list[Due]: ...

    def record_attempt(
        self,
        delivery_id: uuid.UUID,
        status: int | None,
        error: str | None,
        duration_ms: float,
        retry_in: float | None,
    ) -> None: ...

    def cursor(self) -> dt.datetime | None: ...


class Deliverer:
    """Sends due deliveries until cancelled (`run()`); `offer(event)` writes the deliveries
    an event makes, `catch_up(read)` those of the events since the last one seen."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        first_retry_seconds: float,
        allow_private: bool,
        blocking: Callable[..., Awaitable[Any]],
        resolver: Resolve = resolve,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.outbox, self.first_retry_seconds = outbox, first_retry_seconds
        self.allow_private, self.resolver = allow_private, resolver
        self._blocking = blocking
        self._client = httpx.AsyncClient(
            timeout=SEND_TIMEOUT_SECONDS, follow_redirects=False, transport=transport
        )
        self._due = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self.sent = self.failed = 0
        self.behind = True  # events may have been missed: read them back (`catch_up`)

    async def close(self) -> None:
        await self._client.aclose()

    def offer(self, event: Any) -> None:
        """Write the deliveries of a live event (in a task: the caller is a callback)."""
        if (message := message_of(event)) is None:
            return
        task = asyncio.ensure_future(self._enqueue([message]))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _enqueue(self, messages: Iterable[Message]) -> None:
        for message in messages:
            try:
                if await self._blocking(self.outbox.enqueue, message):
                    self._due.set()
            except Exception as error:  # the database away: read back once it is here
                self.behind = True
                logger.warning(
                    "webhooks: could not record %s of run %s (%s); reading it back later",
                    message.type, message.run_id, error,
                )  # fmt: skip

    async def catch_up(self, read: Callable[[dt.datetime], Awaitable[list[Any]]]) -> int:
        """Write the deliveries of the events since the last one recorded (at most
        CATCH_UP_HOURS back): those that came while no API was following, or while the
        database was away. `read(since)` gives the followed events since then, oldest
        first. How many messages they made."""
        self.behind = False  # an event that fails to be written from now on sets it again
        floor = dt.datetime.now(dt.UTC) - dt.timedelta(hours=CATCH_UP_HOURS)
        cursor = await self._blocking(self.outbox.cursor)
        since = floor if cursor is None else max(cursor - dt.timedelta(minutes=1), floor)
        try:
            messages = [m for e in await read(since) if (m := message_of(e)) is not None]
            await self._enqueue(messages)
        except BaseException:
            self.behind = True
            raise
        return len(messages)

    async def keep_up(self, read: Callable[[dt.datetime], Awaitable[list[Any]]]) -> None:
        """Read back (`catch_up`) the events no API recorded, until cancelled: those while
        none ran, at start and again after READ_BACK_AGAIN (an event published before this
        API subscribed may reach Prefect's event store only seconds later: the server writes
        them in batches), and those that failed to be written (the database away), every
        CATCH_UP_SECONDS until they are."""
        started = time.monotonic()
        again = list(READ_BACK_AGAIN)
        while True:
            due = again and time.monotonic() - started >= again[0]
            if due:
                again.pop(0)
            if self.behind or due:
                try:
                    found = await self.catch_up(read)
                except Exception as error:  # Prefect or the database away
                    logger.warning("webhooks: cannot read back missed events (%s)", error)
                else:
                    if found:
                        logger.info("webhooks: %d events read back from Prefect", found)
            until_next = again[0] - (time.monotonic() - started) if again else CATCH_UP_SECONDS
            await asyncio.sleep(min(CATCH_UP_SECONDS, max(until_next, 0.1)))

    async def run(self) -> None:
        """Send what is due until cancelled: at once when a delivery is written or a retry
        comes due, else every POLL_SECONDS (another replica's, a lease run out)."""
        while True:
            self._due.clear()  # before the read: news during it wakes the wait below
            try:
                due = await self._blocking(self.outbox.claim_due, CLAIM_BATCH, LEASE_SECONDS)
            except Exception as error:
                logger.warning("webhooks: cannot read the outbox (%s); trying again", error)
                due = []
            if due:
                await asyncio.gather(*(self._send(d) for d in due))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), POLL_SECONDS)

    async def _send(self, due: Due) -> None:
        began = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            await check_target(due.url, self.allow_private, self.resolver)
            body = json.dumps(due.body, separators=(",", ":"), sort_keys=True)
            at = dt.datetime.now(dt.UTC)
            headers = {
                "content-type": "application/json",
                "webhook-id": due.message_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": sign(due.secret, due.message_id, at, body),
                "user-agent": "training-stack-webhooks/1",
            }
            response = await self._client.post(due.url, content=body.encode(), headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:MAX_ERROR]}"
        except TargetRefused as refused:
            error = f"refused: {refused}"
        except httpx.HTTPError as failed:
            error = f"{type(failed).__name__}: {failed}"[:MAX_ERROR] or type(failed).__name__
        retry_in = None
        if error is not None and not error.startswith("refused:"):
            retry_in = retry_delay(due.attempts + 1, self.first_retry_seconds)
        duration_ms = (time.monotonic() - began) * 1e3
        try:
            await self._blocking(
                self.outbox.record_attempt, due.id, status, error, duration_ms, retry_in
            )
        except Exception as failed:  # the lease runs out and it is sent again
            logger.warning("webhooks: could not record delivery %s (%s)", due.id, failed)
        if retry_in is not None and retry_in < POLL_SECONDS:
            asyncio.get_running_loop().call_later(retry_in, self._due.set)  # before the poll
        if error is None:
            self.sent += 1
        else:
            self.failed += 1
            logger.info(
                "webhooks: delivery %s to %s failed (%s); %s",
                due.id,
                due.url,
                error,
                f"again in {retry_in:.0f} s" if retry_in is not None else "given up",
            )


WEBHOOKS_SCHEMA = """
CREATE TABLE IF NOT EXISTS webhooks (
    id          uuid PRIMARY KEY,
    url         text NOT NULL,
    events      text[] NOT NULL,
    flow        text,
    secret      text NOT NULL,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id      uuid NOT NULL REFERENCES webhooks (id),
    message_id      text NOT NULL,
    event_type      text NOT NULL,
    run_id          uuid,
    occurred        timestamptz NOT NULL,
    body            jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    state           text NOT NULL DEFAULT 'pending',  -- pending, delivered, failed
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (webhook_id, message_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS webhook_attempts (
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id),
    at          timestamptz NOT NULL DEFAULT now(),
    status      integer,
    error       text,
    duration_ms real NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_delivery ON webhook_attempts (delivery_id, at);
-- How far the events have been read: a restarted API reads back from here.
CREATE TABLE IF NOT EXISTS webhook_cursor (
    id       integer PRIMARY KEY CHECK (id = 1),
    occurred timestamptz NOT NULL
);
"""
