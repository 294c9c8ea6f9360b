"""Reads of runs, cached and coalesced: plain asyncio, no Prefect.

A final run never changes, so it is kept (the least recently read are dropped past
`max_final`). A run that is not final is kept for `ttl` seconds, so a read can be that stale
at most. Concurrent reads of one key share a single fetch.
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
        self._recent: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._fetching: dict[K, asyncio.Task[V]] = {}
        self.fetches = 0  # how many reads went through to `fetch`

    async def get(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        if key in self._final:
            self._final.move_to_end(key)
            return self._final[key]
        recent = self._recent.get(key)
        if recent is not None and self.clock() - recent[0] < self.ttl:
            return recent[1]
        task = self._fetching.get(key)
        if task is None:
            # A task of its own: a caller that goes away does not cancel the others' read.
            task = asyncio.ensure_future(self._fetch(key, fetch))
            self._fetching[key] = task
        return await asyncio.shield(task)

    async def _fetch(self, key: K, fetch: Callable[[], Awaitable[V]]) -> V:
        try:
            self.fetches += 1
            value = await fetch()
            self.put(key, value)
            return value
        finally:
            del self._fetching[key]

    def put(self, key: K, value: V) -> None:
        """Remember a value just read: final ones for good, others for `ttl`."""
        self._recent.pop(key, None)
        if self.is_final(value):
            self._final[key] = value
            self._final.move_to_end(key)
            while len(self._final) > self.max_final:
                self._final.popitem(last=False)
        else:
            self._recent[key] = (self.clock(), value)
            while len(self._recent) > self.max_recent:
                self._recent.popitem(last=False)

    def forget(self, key: K) -> None:
        self._final.pop(key, None)
        self._recent.pop(key, None)
