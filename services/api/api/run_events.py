"""Runs' state changes and log lines as they happen, for `GET /runs/{id}?wait=` and the
stream `GET /runs/{id}/events`: one subscription to Prefect per kind per API process,
however many requests wait or stream. The same events tell the API when a deployment
changes (`deployments_fresh_after`), so it keeps its list of flows until one does.

`RunEvents.run()` (a task for the app's lifetime) follows flow-run events (`prefect.flow-
run.*` but heartbeats), the flows' own and the deployments', and log lines (every run's)
through common.prefect_events. An event wakes the requests watching its run; a log line is
handed to the streams watching its run. A watcher (`watch(run_id)`) is registered before its
first read, so nothing that arrives between the read and the wait is lost. While a
subscription is down (`live` or `logs_live` is false, and the log says so), watchers re-read
every `POLL_SECONDS`; it is opened again with backoff. Plain asyncio: a waiting request
holds no thread, only an `asyncio.Event`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from prefect.client.schemas.filters import LogFilter
from prefect.client.schemas.objects import Log
from prefect.events.filters import EventFilter, EventNameFilter

from common.contract import STACK_EVENTS
from common.prefect_events import Subscribe, follow, prefect_logs_subscriber, prefect_subscriber

logger = logging.getLogger("api.run_events")

RUN_RESOURCE = "prefect.flow-run."  # a flow run's resource id: this, then its id
# A deployment's events: created, updated (its parameters' schema, its work pool, ...),
# deleted. Prefect's server emits them inside the transaction that makes the change, so a
# read begun within this long after one may still see the deployment as it was.
DEPLOYMENT_EVENTS = "prefect.deployment."
DEPLOYMENT_SETTLE_SECONDS = 1.0
POLL_SECONDS = 1.0  # a watcher's re-read while a subscription is down
LIVE_RECHECK_SECONDS = 5.0  # and while it is up: a net for an event lost on the way
# Lines a stream's watcher holds for it at most; past that it reads the run's log instead.
MAX_HELD_LINES = 10_000

# Flow runs' events (but their heartbeats), and those the flows emit (for the webhooks).
FOLLOWED = [RUN_RESOURCE, STACK_EVENTS]
# What the subscription asks for: those, and the deployments' (for the list of flows).
SUBSCRIBED = EventFilter(
    event=EventNameFilter(
        prefix=[*FOLLOWED, DEPLOYMENT_EVENTS], exclude_prefix=[f"{RUN_RESOURCE}heartbeat"]
    )
)
ALL_LOGS = LogFilter()  # every run's lines: a stack's log volume is small


def run_id_of(event: Any) -> uuid.UUID | None:
    """The flow run an event is about (its resource), or None."""
    return run_id_in(str(event.resource.id))


def run_id_in(resource_id: str) -> uuid.UUID | None:
    """The flow run a resource id names (`prefect.flow-run.<id>`), or None."""
    if not resource_id.startswith(RUN_RESOURCE):
        return None
    try:
        return uuid.UUID(resource_id.removeprefix(RUN_RESOURCE))
    except ValueError:
        return None


class Watch:
    """One request's view of one run: `changed()` returns once an event (or, for a stream,
    a log line) about it arrived since the last call (at once if one did meanwhile), or
    after a timeout. A stream's watch holds the run's lines for it (`take_lines`)."""

    def __init__(self, events: RunEvents, lines: bool) -> None:
        self._events = events
        self._flag = asyncio.Event()
        self.since = time.monotonic()  # reads from before this may be stale
        self.wants_lines = lines
        self._lines: list[Log] = []
        self.state_news = True  # an event came (or may have) since the run was last read
        self.news_at = self.since  # when (time.monotonic()): a read begun after is fresh
        self.overflowed = False  # lines were dropped: read the log instead
        # When (time.monotonic()) the newest held line arrived: its run's states up to it are
        # in Prefect by then, so a read of them begun after it shows every state before it.
        self.lines_at = self.since

    def wake(self) -> None:
        self.state_news, self.news_at = True, time.monotonic()
        self._flag.set()

    def hand(self, line: Log, at: float) -> None:
        """Hold `line`, which arrived at `at` (time.monotonic(), the same for every watch)."""
        self.lines_at = at
        if len(self._lines) >= MAX_HELD_LINES:
            self._lines.clear()
            self.overflowed = True
        self._lines.append(line)
        self._flag.set()

    def take_lines(self) -> list[Log]:
        lines, self._lines = self._lines, []
        return lines

    @property
    def live(self) -> bool:
        """Whether what this watch needs comes as it happens (else: poll)."""
        return self._events.live and (self._events.logs_live or not self.wants_lines)

    async def changed(self, timeout: float) -> bool:
        """Wait for news of the run: True when some came, False after `timeout` seconds
        (or fewer: POLL_SECONDS while a subscription it needs is down, else
        LIVE_RECHECK_SECONDS), when the caller reads the run again all the same."""
        limit = LIVE_RECHECK_SECONDS if self.live else POLL_SECONDS
        try:
            await asyncio.wait_for(self._flag.wait(), min(timeout, limit))
        except TimeoutError:
            return False
        self._flag.clear()
        return True


class RunEvents:
    def __init__(
        self,
        subscribe: Subscribe = prefect_subscriber,
        subscribe_logs: Subscribe = prefect_logs_subscriber,
    ) -> None:
        self._subscribe, self._subscribe_logs = subscribe, subscribe_logs
        self._watches: dict[uuid.UUID, set[Watch]] = {}
        self.live = self.logs_live = False
        self.live_since = 0.0  # when (time.monotonic()) the subscription last opened
        self.deployments_changed_at = 0.0  # and a deployment's event last came, + settling
        self.events = 0  # events received, for the metrics
        self.lines = 0  # log lines received
        # Called with each flow-run event, as it comes (the webhooks' outbox).
        self.listeners: list[Callable[[Any], object]] = []

    @asynccontextmanager
    async def watch(self, run_id: uuid.UUID, *, lines: bool = False) -> AsyncIterator[Watch]:
        """Watch `run_id`; with `lines`, also hold its log lines as they come."""
        watch = Watch(self, lines)
        self._watches.setdefault(run_id, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(run_id)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[run_id]

    @property
    def watched(self) -> int:
        """How many runs have a request waiting on them."""
        return len(self._watches)

    def wake(self, run_id: uuid.UUID) -> None:
        for watch in self._watches.get(run_id, ()):
            watch.wake()

    def deployments_fresh_after(self) -> float | None:
        """A `time.monotonic()`: a read of the deployments begun after it is still current,
        as no deployment changed since (else its event would have come). None while the
        subscription is down: then nothing says so."""
        if not self.live:
            return None
        return max(self.live_since, self.deployments_changed_at)

    def _wake_all(self, streams_only: bool = False) -> None:
        for watches in self._watches.values():
            for watch in watches:
                if watch.wants_lines or not streams_only:
                    watch.wake()

    async def run(self) -> None:
        """Follow the events and the logs until cancelled; subscribe again, with backoff,
        when cut."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                follow(
                    SUBSCRIBED,
                    self._on_event,
                    on_open=self._on_open,
                    on_close=self._on_close,
                    subscribe=self._subscribe,
                )
            )
            group.create_task(
                follow(
                    ALL_LOGS,
                    self._on_line,
                    on_open=self._on_logs_open,
                    on_close=self._on_logs_close,
                    subscribe=self._subscribe_logs,
                )
            )

    def _on_open(self) -> None:
        # Changes made while it was down came with no event: reads from before are stale.
        self.live, self.live_since = True, time.monotonic()
        logger.info("following flow-run events: waits and streams answer as runs change")

    def _on_event(self, event: Any) -> None:
        self.events += 1
        if str(event.event).startswith(DEPLOYMENT_EVENTS):
            self.deployments_changed_at = time.monotonic() + DEPLOYMENT_SETTLE_SECONDS
        if (run_id := run_id_of(event)) is not None:
            self.wake(run_id)
        for listener in self.listeners:
            listener(event)

    def _on_close(self, why: str, delay: float) -> None:
        if self.live:
            self.live = False
            self._wake_all()  # each watcher re-reads, then polls until we are back
        logger.warning(
            "no flow-run events (%s): waits and streams poll every %.0f s; subscribing "
            "again in %.0f s",
            why,
            POLL_SECONDS,
            delay,
        )

    def _on_logs_open(self) -> None:
        self.logs_live = True
        self._wake_all(streams_only=True)  # a line may have passed while we were away
        logger.info("following log lines: streams show them as they come")

    def _on_line(self, line: Log) -> None:
        self.lines += 1
        if line.flow_run_id is None:
            return
        at = time.monotonic()  # one moment for all its watches: their reads of states coalesce
        for watch in self._watches.get(line.flow_run_id, ()):
            if watch.wants_lines:
                watch.hand(line, at)

    def _on_logs_close(self, why: str, delay: float) -> None:
        if self.logs_live:
            self.logs_live = False
            self._wake_all(streams_only=True)
        logger.warning(
            "no log lines (%s): streams read logs every %.0f s; subscribing again in %.0f s",
            why,
            POLL_SECONDS,
            delay,
        )
