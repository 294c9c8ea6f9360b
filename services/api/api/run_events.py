"""Runs' state changes as they happen, for `GET /runs/{id}?wait=`: one subscription to
Prefect's events per API process, however many requests wait.

`RunEvents.run()` (a task for the app's lifetime) follows flow-run events (`prefect.flow-
run.*` but heartbeats) through common.prefect_events, and wakes the requests watching each
run an event names. A watcher (`watch(run_id)`) is registered before its first read, so an
event that arrives between the read and the wait is not lost. While the subscription is
down (`live` is false, and the log says so), watchers re-read every `POLL_SECONDS`; it is
opened again with backoff. Plain asyncio: a waiting request holds no thread, only an
`asyncio.Event`."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from prefect.events.filters import EventFilter, EventNameFilter

from common.prefect_events import Subscribe, follow, prefect_subscriber

logger = logging.getLogger("api.run_events")

RUN_RESOURCE = "prefect.flow-run."  # a flow run's resource id: this, then its id
POLL_SECONDS = 1.0  # a watcher's re-read while the subscription is down
LIVE_RECHECK_SECONDS = 5.0  # and while it is up: a net for an event lost on the way

FLOW_RUN_EVENTS = EventFilter(
    event=EventNameFilter(prefix=[RUN_RESOURCE], exclude_prefix=[f"{RUN_RESOURCE}heartbeat"])
)


def run_id_of(event: Any) -> uuid.UUID | None:
    """The flow run an event is about (its resource), or None."""
    resource = str(event.resource.id)
    if not resource.startswith(RUN_RESOURCE):
        return None
    try:
        return uuid.UUID(resource.removeprefix(RUN_RESOURCE))
    except ValueError:
        return None


class Watch:
    """One request's view of one run: `changed()` returns once an event about it arrived
    since the last call (at once if one did meanwhile), or after a timeout."""

    def __init__(self, events: RunEvents) -> None:
        self._events = events
        self._flag = asyncio.Event()
        self.since = time.monotonic()  # reads from before this may be stale

    def wake(self) -> None:
        self._flag.set()

    async def changed(self, timeout: float) -> bool:
        """Wait for an event about the run: True when one came, False after `timeout`
        seconds (or fewer: POLL_SECONDS while the subscription is down, else
        LIVE_RECHECK_SECONDS), when the caller reads the run again all the same."""
        limit = LIVE_RECHECK_SECONDS if self._events.live else POLL_SECONDS
        try:
            await asyncio.wait_for(self._flag.wait(), min(timeout, limit))
        except TimeoutError:
            return False
        self._flag.clear()
        return True


class RunEvents:
    def __init__(self, subscribe: Subscribe = prefect_subscriber) -> None:
        self._subscribe = subscribe
        self._watches: dict[uuid.UUID, set[Watch]] = {}
        self.live = False
        self.events = 0  # flow-run events received, for the metrics

    @asynccontextmanager
    async def watch(self, run_id: uuid.UUID) -> AsyncIterator[Watch]:
        watch = Watch(self)
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

    def _wake_all(self) -> None:
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    async def run(self) -> None:
        """Follow the events until cancelled; subscribe again, with backoff, when cut."""
        await follow(
            FLOW_RUN_EVENTS,
            self._on_event,
            on_open=self._on_open,
            on_close=self._on_close,
            subscribe=self._subscribe,
        )

    def _on_open(self) -> None:
        self.live = True
        logger.info("following flow-run events: waits answer as runs change")

    def _on_event(self, event: Any) -> None:
        self.events += 1
        if (run_id := run_id_of(event)) is not None:
            self.wake(run_id)

    def _on_close(self, why: str, delay: float) -> None:
        if self.live:
            self.live = False
            self._wake_all()  # each watcher re-reads, then polls until we are back
        logger.warning(
            "no flow-run events (%s): waits poll every %.0f s; subscribing again in %.0f s",
            why,
            POLL_SECONDS,
            delay,
        )
