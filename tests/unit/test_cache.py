"""The API's read cache (api.cache): final values kept, others for `ttl`, reads coalesced."""

import asyncio

import pytest

from api.cache import ReadCache


class Source:
    """Values by key, counting reads; `gate` holds reads until it is set."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.reads = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def fetcher(self, key: str):
        async def fetch() -> str:
            self.reads += 1
            await self.gate.wait()
            if self.values[key] == "boom":
                raise RuntimeError("away")
            return self.values[key]

        return fetch


def is_final(value: str) -> bool:
    return value.startswith("final")


def test_final_values_are_kept_and_others_for_ttl() -> None:
    async def scenario() -> None:
        now = [0.0]
        cache: ReadCache[str, str] = ReadCache(is_final, ttl=1.0, clock=lambda: now[0])
        source = Source()
        source.values = {"a": "running", "b": "final-1"}
        assert await cache.get("a", source.fetcher("a")) == "running"
        source.values["a"] = "final-2"
        now[0] = 0.9
        assert await cache.get("a", source.fetcher("a")) == "running"  # within ttl: stale
        now[0] = 1.1
        assert await cache.get("a", source.fetcher("a")) == "final-2"
        assert await cache.get("b", source.fetcher("b")) == "final-1"
        reads = source.reads
        now[0] = 1_000_000.0
        assert await cache.get("a", source.fetcher("a")) == "final-2"
        assert await cache.get("b", source.fetcher("b")) == "final-1"
        assert source.reads == reads == 3  # final: never read again

    asyncio.run(scenario())


def test_concurrent_reads_share_one_fetch_and_its_error() -> None:
    async def scenario() -> None:
        cache: ReadCache[str, str] = ReadCache(is_final, ttl=1.0)
        source = Source()
        source.values = {"a": "final", "x": "boom"}
        source.gate.clear()
        readers = [asyncio.create_task(cache.get("a", source.fetcher("a"))) for _ in range(20)]
        failing = [asyncio.create_task(cache.get("x", source.fetcher("x"))) for _ in range(5)]
        await asyncio.sleep(0)
        source.gate.set()
        assert await asyncio.gather(*readers) == ["final"] * 20
        results = await asyncio.gather(*failing, return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results)
        assert source.reads == 2
        # An error is not cached: the next read tries again.
        source.values["x"] = "final-x"
        assert await cache.get("x", source.fetcher("x")) == "final-x"

    asyncio.run(scenario())


def test_a_reader_that_goes_away_does_not_cancel_the_others() -> None:
    async def scenario() -> None:
        cache: ReadCache[str, str] = ReadCache(is_final, ttl=1.0)
        source = Source()
        source.values = {"a": "final"}
        source.gate.clear()
        first = asyncio.create_task(cache.get("a", source.fetcher("a")))
        second = asyncio.create_task(cache.get("a", source.fetcher("a")))
        await asyncio.sleep(0)
        first.cancel()
        source.gate.set()
        assert await second == "final"
        with pytest.raises(asyncio.CancelledError):
            await first
        assert source.reads == 1

    asyncio.run(scenario())


def test_sizes_are_bounded_and_forget_drops_a_key() -> None:
    async def scenario() -> None:
        cache: ReadCache[str, str] = ReadCache(is_final, ttl=1.0, max_final=3, max_recent=2)
        for i in range(10):
            cache.put(f"f{i}", "final")
            cache.put(f"r{i}", "running")
        assert len(cache._final) == 3 and len(cache._recent) == 2
        source = Source()
        source.values = {"f9": "final-new"}
        cache.forget("f9")
        assert await cache.get("f9", source.fetcher("f9")) == "final-new"

    asyncio.run(scenario())
