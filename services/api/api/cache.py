"""Reads of runs, cached and coalesced: plain asyncio, no Prefect.

A final run never changes, so it is kept (the least recently read are dropped past
`max_final`). A run that is not final is kept for `ttl` seconds, so a read can be that stale
at most. Concurrent reads of one key share a single fetch. A reader that knows the value
changed at some time (a waiting request woken by the run's event) passes `fresh_after`:
it then takes only a value whose fetch began after it.
"""

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ReadCache(Generic[K, V]):
    def __init__(
        self,
        is_final: Callable[[V], bool],
        *,
        ttl: float,
        max_final: int = 10_000,
        max_recent: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.is_final, self.ttl, self.clock = is_final, ttl, clock
        self.max_final, self.max_recent = max_final, max_recent
        self._final: OrderedDict[K, V] = OrderedDict()
        # Values not final, and fetches in flight, with the time (clock) their fetch began.
        self._recent: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._fetching: dict[K, tuple[float, asyncio.Task[V]]] = {}
        self.fetches = 0  # how many reads went through to `fetch`

    async def get(
        self, key: K, fetch: Callable[[], Awaitable[V]], fresh_after: float | None = None
    ) -> V:
        if key in self._final:
            self._final.move_to_end(key)
            return self._final[key]
        oldest = self.clock() - self.ttl
        if fresh_after is not None:
            oldest = max(oldest, fresh_after)
        recent = self._recent.get(key)
        if recent is not None and recent[0] > oldest:
            return recent[1]
        began, task = self._fetching.get(key) or (None, None)
        if task is None or (fresh_after is not None and began is not None and began < fresh_after):
            # A task of its own: a caller that goes away does not cancel the others' read.
            began = self.clock()
            task = asyncio.ensure_future(self._fetch(key, fetch, began))
            self._fetching[key] = (began, task)
        return await asyncio.shield(task)

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[V]], began: float) -> V:
        try:
            self.fetches += 1
            value = await fetch()
            self.put(key, value, began)
            return value
        finally:
            if self._fetching.get(key, (None, None))[0] == began:
                del self._fetching[key]

    def put(self, key: K, value: V, began: float | None = None) -> None:
        """Remember a value just read (its fetch `began` then; by default, now): final ones
        for good, others for `ttl`."""
        if began is None:
            began = self.clock()
        recent = self._recent.get(key)
        if recent is not None and recent[0] > began and not self.is_final(value):
            return  # a fetch begun later has already answered: keep the fresher value
        self._recent.pop(key, None)
        if self.is_final(value):
            self._final[key] = value
            self._final.move_to_end(key)
            while len(self._final) > self.max_final:
                self._final.popitem(last=False)
        else:
            self._recent[key] = (began, value)
            while len(self._recent) > self.max_recent:
                self._recent.popitem(last=False)

    def forget(self, key: K) -> None:
        self._final.pop(key, None)
        self._recent.pop(key, None)
