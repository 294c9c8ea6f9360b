"""Push, not only poll: the worker polls the moment a run is scheduled in its pool.

Prefect's worker polls its pool every PREFECT_WORKER_QUERY_SECONDS (1 s in the agent, with
Prefect's jitter of 30 %): a run scheduled just after a poll waits for the next, half a
second on average. `install(pool)` adds, beside that loop, a subscription to the server's
events (`prefect.flow-run.Scheduled` of runs related to the pool, through Prefect's own
`PrefectEventSubscriber` on `/api/events/out`), and runs the worker's own poll
(`get_and_submit_flow_runs`) as each event arrives.

The loop keeps polling as before: it is the fallback while the subscription is down (it is
opened again with backoff, by common.prefect_events, and the log says so) and picks up
anything an event missed. A poll pushed beside the loop's cannot start a run twice:
Prefect's worker skips runs it is already submitting, and the server lets only one claim
move a run to PENDING (the one an agent's two polls race for is the same as two agents
racing for it). Events that arrive while a pushed poll runs are answered by one more poll
after it, not one each.

Prefect has no hook for this: `install` wraps `prefect.workers.base.critical_service_loop`,
the helper `BaseWorker.start` runs its polling loop with, for that one workload only.
`tests/integration/test_push.py` fails if a Prefect upgrade bypasses it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.events.schemas.events import ResourceSpecification

from common.prefect_events import Subscribe, follow, prefect_subscriber

logger = logging.getLogger("agent.push")

SCHEDULED = "prefect.flow-run.Scheduled"
POLL_WORKLOAD = "get_and_submit_flow_runs"  # BaseWorker's poll, as the loop is given it


def scheduled_in(pool: str) -> EventFilter:
    """Prefect's filter for runs scheduled in work pool `pool` (its related resource)."""
    return EventFilter(
        event=EventNameFilter(name=[SCHEDULED]),
        related=EventRelatedFilter(
            labels=ResourceSpecification(
                {"prefect.resource.role": "work-pool", "prefect.resource.name": pool}
            )
        ),
    )


async def poll_on_events(
    poll: Callable[[], Awaitable[object]], pool: str, subscribe: Subscribe = prefect_subscriber
) -> None:
    """Run `poll` once per burst of Scheduled events in `pool`; runs until cancelled."""
    wake = anyio.Event()

    async def poller() -> None:
        nonlocal wake
        while True:
            await wake.wait()
            wake = anyio.Event()  # events from now on call for one more poll
            try:
                await poll()
            except Exception as error:  # the loop's own poll reports and retries these
                logger.debug("pushed poll failed: %r", error)

    def closed(why: str, delay: float) -> None:
        logger.warning(
            "push: no event subscription (%s); polling on the interval alone, "
            "subscribing again in %.0f s",
            why,
            delay,
        )

    async with anyio.create_task_group() as group:
        group.start_soon(poller)
        await follow(
            scheduled_in(pool),
            lambda _event: wake.set(),
            on_open=lambda: logger.info("push: polling pool %r as runs are scheduled", pool),
            on_close=closed,
            subscribe=subscribe,
        )


def install(pool: str) -> None:
    """Make the worker that `prefect worker start` runs in this process poll on push too."""
    from prefect.workers import base

    original = base.critical_service_loop
    if getattr(original, "pushes_to", None) is not None:
        return  # installed already

    async def critical_service_loop(workload: Callable[..., Any], *args: Any, **kwargs: Any):
        if getattr(workload, "__name__", None) != POLL_WORKLOAD or kwargs.get("run_once"):
            return await original(workload, *args, **kwargs)
        async with anyio.create_task_group() as group:
            group.start_soon(poll_on_events, workload, pool)
            try:
                return await original(workload, *args, **kwargs)
            finally:
                group.cancel_scope.cancel()

    critical_service_loop.pushes_to = pool  # type: ignore[attr-defined]
    base.critical_service_loop = critical_service_loop
