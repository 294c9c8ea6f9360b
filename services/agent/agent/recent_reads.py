"""The worker reads a run's deployment once as it submits it, not twice.

Prefect's worker reads the deployment as it takes a run (`BaseWorker._submit_run`, to check
it still exists), then again, with the flow, as it builds the run's job configuration
(`resolve_for_flow_run`), some 40 ms later. Each read costs the server a query and a
response (27 ms for a deployment on the 2-core machine, before PENDING and RUNNING), and in
a burst every run of the same deployment repeats them. `install` has the worker's Prefect
client answer `read_deployment` and `read_flow` from a read of the same object made less
than `RECENT_SECONDS` ago: the worker's view is then at most that old, as it is of its
pool's backlog between two polls.

Each answer is a deep copy: Prefect's worker merges a run's job variables into the
deployment's in place, and one run's must not reach the next. Failures are not kept (a
deployment that is gone is asked again). A read asked for while the same read is on its way
waits for that one: agent.push starts a run's reads as its Scheduled event comes, beside
the poll that finds the run, and the worker's own reads then join them.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

# Well under the worker's poll interval (1 s): what a poll would see anyway.
RECENT_SECONDS = 1.0
METHODS = ("read_deployment", "read_flow")

T = TypeVar("T")


class RecentReads:
    """Answers of reads by object id, each kept `seconds` after it was read."""

    def __init__(
        self, seconds: float = RECENT_SECONDS, clock: Callable[[], float] = time.monotonic
    ):
        self.seconds = seconds
        self.clock = clock
        self._answers: dict[tuple[str, str], tuple[float, Any]] = {}
        self._reading: dict[tuple[str, str], asyncio.Future[Any]] = {}

    async def get(
        self, kind: str, object_id: uuid.UUID | str, read: Callable[[], Awaitable[T]]
    ) -> T:
        key = (kind, str(object_id))
        kept = self._answers.get(key)
        if kept is not None and self.clock() - kept[0] < self.seconds:
            return kept[1].model_copy(deep=True)
        reading = self._reading.get(key)
        if reading is None:
            # A task of its own: a caller that goes away does not cancel the others' read.
            reading = asyncio.ensure_future(self._read(key, read))
            self._reading[key] = reading
        answer = await asyncio.shield(reading)
        return answer.model_copy(deep=True)

    async def _read(self, key: tuple[str, str], read: Callable[[], Awaitable[T]]) -> T:
        began = self.clock()  # the answer is as old as the read's start
        try:
            answer = await read()
        finally:
            del self._reading[key]
        self._answers = {k: v for k, v in self._answers.items() if began - v[0] < self.seconds}
        self._answers[key] = (began, answer)
        return answer


def install(reads: RecentReads | None = None) -> RecentReads:
    """Answer the Prefect client's `read_deployment` and `read_flow` from `reads` (a new one
    unless given) in this process: the worker's. Installed once; returns the one in use."""
    from prefect.client.orchestration import PrefectClient

    installed = getattr(PrefectClient, "_agent_recent_reads", None)
    if installed is not None:
        return installed
    reads = reads or RecentReads()
    for name in METHODS:
        original = getattr(PrefectClient, name)

        def remembered(original: Any, name: str) -> Any:
            @functools.wraps(original)
            async def read(self: PrefectClient, object_id: Any) -> Any:
                return await reads.get(name, object_id, lambda: original(self, object_id))

            return read

        setattr(PrefectClient, name, remembered(original, name))
    PrefectClient._agent_recent_reads = reads  # type: ignore[attr-defined]
    return reads
