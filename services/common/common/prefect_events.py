"""Following Prefect's events (`/api/events/out`) and logs (`/api/logs/out`), as the
agent's push (agent.push) and the API's waits and streams (api.run_events) do: one
subscription, opened again with backoff when it fails or ends, for as long as the caller's
task runs.

Through Prefect's own `PrefectEventSubscriber` and `PrefectLogsSubscriber`, which
authenticate with Prefect's auth string. After an abnormal close the events one reconnects
on its own and backfills; the logs one, which cannot backfill, is made to end instead. A
clean close (the server's restart) ends either's iteration, and `follow` subscribes again.
Needs Prefect's client: only services that have it import this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio
from prefect.client.schemas.filters import LogFilter
from prefect.events.clients import PrefectEventSubscriber
from prefect.events.filters import EventFilter
from prefect.logging.clients import PrefectLogsSubscriber

RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # between attempts to subscribe again

# A subscription, given its filter (an EventFilter for events, a LogFilter for logs).
Subscribe = Callable[[Any], AbstractAsyncContextManager[AsyncIterator[Any]]]


def prefect_subscriber(event_filter: EventFilter) -> PrefectEventSubscriber:
    return PrefectEventSubscriber(filter=event_filter)


def prefect_logs_subscriber(log_filter: LogFilter) -> PrefectLogsSubscriber:
    # No reconnecting of its own: the logs stream has no backfill, so a silent reconnect
    # would lose the lines in between unnoticed. A drop ends the subscription instead, and
    # the caller hears of it (`on_close`) and reads what it missed.
    return PrefectLogsSubscriber(filter=log_filter, reconnection_attempts=0)


async def follow(
    event_filter: EventFilter | LogFilter,
    on_event: Callable[[Any], object],
    *,
    on_open: Callable[[], object] = lambda: None,
    on_close: Callable[[str, float], object] = lambda why, delay: None,
    subscribe: Subscribe = prefect_subscriber,
) -> None:
    """Call `on_event(event)` for each event (or log) `event_filter` lets through, until
    cancelled.

    `on_open()` runs once each subscription is up; `on_close(why, delay)` once it failed or
    ended, with why and the seconds until the next attempt (RETRY_SECONDS, growing while
    attempts keep failing)."""
    failures = 0
    while True:
        why = "the stream ended"
        try:
            async with subscribe(event_filter) as events:
                failures = 0
                on_open()
                async for event in events:
                    on_event(event)
        except Exception as error:
            why = str(error) or type(error).__name__
        delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
        failures += 1
        on_close(why, delay)
        await anyio.sleep(delay)
