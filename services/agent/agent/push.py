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

The event names the run's deployment and flow, which the worker reads as it takes the run
(a deployment's read costs the server 25 to 40 ms on the 2-core machine): those reads start
with the poll, not after it, and the worker's own join them (agent.recent_reads). A full
worker, which will not take the run, reads nothing ahead.

A worker also polls the moment one of its slots frees (a run ends, or another agent claimed
the run it was submitting), not at its next interval: in a burst, a slot would otherwise
idle up to a poll interval after each run. And it does not poll while its slots are full
(AGENT_LIMIT runs going): Prefect's worker would query the whole backlog to submit none of
it, a query per agent per second that, in a burst, costs the server CPU the runs need.

Prefect has no hook for this: `install` wraps `prefect.workers.base.critical_service_loop`,
the helper `BaseWorker.start` runs its polling loop with, for that one workload only, and
the worker's `_release_limit_slot`. `tests/integration/test_push.py` fails if a Prefect
upgrade bypasses them.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter
from prefect.events.schemas.events import ResourceSpecification
from prefect.types._datetime import now

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


class PushedPoll:
    """Runs `poll` once per burst of wake-ups: `wake()` during a poll asks for one more after
    it, however many times it is called. `run()` serves until cancelled."""

    def __init__(self, poll: Callable[[], Awaitable[object]]) -> None:
        self.poll = poll
        self._wake = anyio.Event()

    def wake(self) -> None:
        """Ask for a poll (from the worker's event loop)."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()  # wake-ups from now on call for one more poll
            try:
                await self.poll()
            except Exception as error:  # the loop's own poll reports and retries these
                logger.debug("pushed poll failed: %r", error)


# What a Scheduled event's related resources name, and the client's read of each: the reads
# agent.recent_reads remembers.
READS_BY_ROLE = {"deployment": "read_deployment", "flow": "read_flow"}


def related_ids(event: Any) -> dict[str, uuid.UUID]:
    """The ids of the event's related resources in READS_BY_ROLE, by role."""
    found = {}
    for resource in event.related:
        if resource.role in READS_BY_ROLE:
            try:
                found[resource.role] = uuid.UUID(str(resource.id).rsplit(".", 1)[-1])
            except ValueError:
                continue
    return found


async def read_ahead(worker: Any, event: Any) -> None:
    """Read the event's run's deployment and flow with `worker`'s client (Prefect's
    BaseWorker), concurrently; failures are the worker's own reads' to meet, later. Not
    while the worker is full: it will not take the run (in a burst, most events)."""
    client = getattr(worker, "_client", None)
    if client is None or free_slots(worker) == 0:  # not set up (or torn down), or full
        return
    async with anyio.create_task_group() as group:
        for role, object_id in related_ids(event).items():
            group.start_soon(_quietly, getattr(client, READS_BY_ROLE[role]), object_id)


async def _quietly(read: Callable[[uuid.UUID], Awaitable[object]], object_id: uuid.UUID) -> None:
    try:
        await read(object_id)
    except Exception as error:
        logger.debug("reading ahead %s failed: %r", object_id, error)


def free_slots(worker: Any) -> int | None:
    """How many more runs `worker` (Prefect's BaseWorker) can take now; None: no limit."""
    limiter = getattr(worker, "_limiter", None)
    return None if limiter is None else int(limiter.available_tokens)


def unless_full(
    poll: Callable[[], Coroutine[Any, Any, Any]],
) -> Callable[[], Coroutine[Any, Any, Any]]:
    """The worker's poll (its bound `get_and_submit_flow_runs`), skipped while the worker's
    slots are all taken. A skipped poll still counts as one for the worker's health check
    (`--with-healthcheck` fails a worker that has not polled for a while): the loop is alive,
    it only has no room."""
    worker = getattr(poll, "__self__", None)

    @functools.wraps(poll)
    async def gated() -> Any:
        if worker is not None and free_slots(worker) == 0:
            worker._last_polled_time = now("UTC")  # as Prefect's poll sets it
            return []
        return await poll()

    return gated


def wake_on_release(worker: Any, pushed: PushedPoll) -> None:
    """Make `worker` poll as soon as it frees a slot (Prefect's `_release_limit_slot`)."""
    release = worker._release_limit_slot

    def release_and_poll(flow_run_id: Any) -> None:
        release(flow_run_id)
        pushed.wake()

    worker._release_limit_slot = release_and_poll


async def poll_on_events(
    pushed: PushedPoll,
    pool: str,
    subscribe: Subscribe = prefect_subscriber,
    read_ahead: Callable[[Any], Coroutine[Any, Any, object]] | None = None,
) -> None:
    """Run `pushed`'s poll once per burst of Scheduled events in `pool` (and of its other
    wake-ups), and `read_ahead(event)` beside it for each; runs until cancelled."""

    def closed(why: str, delay: float) -> None:
        logger.warning(
            "push: no event subscription (%s); polling on the interval alone, "
            "subscribing again in %.0f s",
            why,
            delay,
        )

    async with anyio.create_task_group() as group:

        def scheduled(event: Any) -> None:
            if read_ahead is not None:
                group.start_soon(read_ahead, event)
            pushed.wake()

        group.start_soon(pushed.run)
        await follow(
            scheduled_in(pool),
            scheduled,
            on_open=lambda: logger.info("push: polling pool %r as runs are scheduled", pool),
            on_close=closed,
            subscribe=subscribe,
        )


def remembers_reads() -> bool:
    """Whether the worker's client answers reads from agent.recent_reads: only then is
    reading ahead of any use."""
    from prefect.client.orchestration import PrefectClient

    return getattr(PrefectClient, "_agent_recent_reads", None) is not None


def install(pool: str) -> None:
    """Make the worker that `prefect worker start` runs in this process poll on push too,
    and as its slots free, and not while they are full."""
    from prefect.workers import base

    original = base.critical_service_loop
    if getattr(original, "pushes_to", None) is not None:
        return  # installed already

    async def critical_service_loop(workload: Callable[..., Any], *args: Any, **kwargs: Any):
        if getattr(workload, "__name__", None) != POLL_WORKLOAD or kwargs.get("run_once"):
            return await original(workload, *args, **kwargs)
        poll = unless_full(workload)
        pushed = PushedPoll(poll)
        worker = getattr(workload, "__self__", None)
        ahead = None
        if worker is not None:
            wake_on_release(worker, pushed)
            if remembers_reads():
                ahead = functools.partial(read_ahead, worker)
        async with anyio.create_task_group() as group:
            group.start_soon(functools.partial(poll_on_events, pushed, pool, read_ahead=ahead))
            try:
                return await original(poll, *args, **kwargs)
            finally:
                group.cancel_scope.cancel()

    critical_service_loop.pushes_to = pool  # type: ignore[attr-defined]
    base.critical_service_loop = critical_service_loop
