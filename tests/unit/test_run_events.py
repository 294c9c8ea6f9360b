"""api.run_events: one subscription wakes the requests watching a run; others sleep on; a
dropped subscription wakes everyone, says so, and is opened again; a second one hands log
lines to the streams watching their run. Deployments' events say when the list of flows is
stale. GET /runs/{id}?wait= on it:
tests/unit/test_api_routers_runs.py, the streams: tests/unit/test_run_stream.py, and on a
real stack tests/integration."""

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from prefect.client.schemas.objects import Log

from api import run_events
from api.run_events import ALL_LOGS, SUBSCRIBED, RunEvents, run_id_of
from common import prefect_events

NOW = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)


def event(resource: str, name: str = "prefect.flow-run.Running") -> Any:
    return SimpleNamespace(event=name, resource=SimpleNamespace(id=resource))


class FakeStream:
    """Subscriptions fed by the test (`send`); `drop()` ends the current one with an error."""

    def __init__(self, failures: int = 0, expects: Any = SUBSCRIBED) -> None:
        self.expects = expects
        self.opened = 0
        self.failures = failures
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    @asynccontextmanager
    async def subscribe(self, event_filter: Any) -> AsyncIterator[AsyncIterator[Any]]:
        assert event_filter is self.expects
        self.opened += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("server away")
        yield self._events()

    async def _events(self) -> AsyncIterator[Any]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


def test_the_run_an_event_is_about() -> None:
    run = uuid.uuid4()
    assert run_id_of(event(f"prefect.flow-run.{run}")) == run
    assert run_id_of(event(f"prefect.task-run.{run}")) is None
    assert run_id_of(event("prefect.flow-run.not-an-id")) is None
    wire = SUBSCRIBED.model_dump(mode="json")["event"]
    assert wire["prefix"] == ["prefect.flow-run.", "training-stack.", "prefect.deployment."]
    assert wire["exclude_prefix"] == ["prefect.flow-run.heartbeat"]


@pytest.mark.anyio
async def test_an_event_wakes_the_watchers_of_its_run_only() -> None:
    stream = FakeStream()
    events = RunEvents(stream.subscribe, FakeStream(expects=ALL_LOGS).subscribe)
    follow = asyncio.create_task(events.run())
    mine, other = uuid.uuid4(), uuid.uuid4()
    try:
        async with events.watch(mine) as a, events.watch(mine) as b, events.watch(other) as c:
            while not events.live:
                await asyncio.sleep(0.01)
            assert events.watched == 2
            await stream.queue.put(event(f"prefect.flow-run.{mine}"))
            woken = await asyncio.wait_for(asyncio.gather(a.changed(3), b.changed(3)), 2)
            assert woken == [True, True]
            assert await c.changed(0.2) is False  # not its run: a timeout
        assert events.watched == 0 and events.events == 1
    finally:
        follow.cancel()


@pytest.mark.anyio
async def test_an_event_between_a_read_and_the_wait_is_not_lost() -> None:
    events = RunEvents(FakeStream().subscribe, FakeStream(expects=ALL_LOGS).subscribe)
    run = uuid.uuid4()
    async with events.watch(run) as watch:
        events.wake(run)  # arrives while the request reads the run
        assert await watch.changed(3) is True  # at once
        assert await watch.changed(0.1) is False  # and only once


@pytest.mark.anyio
async def test_a_dropped_subscription_wakes_every_watcher_and_is_opened_again(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(prefect_events, "RETRY_SECONDS", (0.05,))
    monkeypatch.setattr(run_events, "POLL_SECONDS", 0.1)
    stream = FakeStream(failures=1)
    events = RunEvents(stream.subscribe, FakeStream(expects=ALL_LOGS).subscribe)
    follow = asyncio.create_task(events.run())
    try:
        async with events.watch(uuid.uuid4()) as watch:
            while not events.live:  # one failure, then subscribed
                await asyncio.sleep(0.01)
            await stream.queue.put(ConnectionResetError("cut"))
            assert await watch.changed(3) is True  # woken to read again, then to poll
            assert not events.live
            assert await watch.changed(3) is False  # polling: POLL_SECONDS, not 3 s
            while not events.live:
                await asyncio.sleep(0.01)
        assert stream.opened == 3
    finally:
        follow.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == "api.run_events"]
    assert any(
        "no flow-run events (server away): waits and streams poll every 0 s" in s for s in said
    )
    assert any("no flow-run events (cut)" in s for s in said)


@pytest.mark.anyio
async def test_deployment_events_say_from_when_a_read_of_the_deployments_is_current(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prefect_events, "RETRY_SECONDS", (0.05,))
    stream = FakeStream()
    events = RunEvents(stream.subscribe, FakeStream(expects=ALL_LOGS).subscribe)
    assert events.deployments_fresh_after() is None  # no events yet: nothing tells
    before = time.monotonic()
    follow = asyncio.create_task(events.run())
    try:
        while not events.live:
            await asyncio.sleep(0.01)
        opened = events.deployments_fresh_after()
        assert opened is not None and before < opened <= time.monotonic()
        await stream.queue.put(event(f"prefect.flow-run.{uuid.uuid4()}"))
        await stream.queue.put(event("prefect.deployment.x", "prefect.deployment.updated"))
        while events.events < 2:
            await asyncio.sleep(0.01)
        changed = events.deployments_fresh_after()
        assert changed is not None
        # After the event, and after Prefect's transaction has had time to end.
        assert changed >= time.monotonic() + run_events.DEPLOYMENT_SETTLE_SECONDS - 0.5
        await stream.queue.put(event(f"prefect.flow-run.{uuid.uuid4()}"))
        while events.events < 3:
            await asyncio.sleep(0.01)
        assert events.deployments_fresh_after() == changed  # a run's event changes nothing
        await stream.queue.put(ConnectionResetError("cut"))
        while events.live:
            await asyncio.sleep(0.01)
        assert events.deployments_fresh_after() is None  # changes may pass unheard
        while not events.live:
            await asyncio.sleep(0.01)
        reopened = events.deployments_fresh_after()
        assert reopened is not None and reopened >= events.live_since > opened
    finally:
        follow.cancel()


def log_line(run: uuid.UUID | None, message: str = "hello") -> Log:
    return Log(name="flow", level=20, message=message, timestamp=NOW, flow_run_id=run)


@pytest.mark.anyio
async def test_a_line_goes_to_the_streams_of_its_run_and_a_drop_makes_them_poll(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(prefect_events, "RETRY_SECONDS", (0.05,))
    monkeypatch.setattr(run_events, "POLL_SECONDS", 0.1)
    logs = FakeStream(expects=ALL_LOGS)
    events = RunEvents(FakeStream().subscribe, logs.subscribe)
    follow = asyncio.create_task(events.run())
    mine, other = uuid.uuid4(), uuid.uuid4()
    try:
        async with (
            events.watch(mine, lines=True) as stream,
            events.watch(mine) as waiter,
            events.watch(other, lines=True) as elsewhere,
        ):
            while not (events.live and events.logs_live):
                await asyncio.sleep(0.01)
            assert stream.live and waiter.live
            stream.state_news = waiter.state_news = False
            await logs.queue.put(log_line(mine))
            await logs.queue.put(log_line(None, "a worker's, of no run"))
            assert await stream.changed(3) is True
            assert [line.message for line in stream.take_lines()] == ["hello"]
            assert stream.state_news is False  # a line is not a state change
            assert await waiter.changed(0.2) is False  # a wait does not take lines
            assert elsewhere.take_lines() == [] and events.lines == 2
            await logs.queue.put(ConnectionResetError("cut"))
            assert await stream.changed(3) is True  # woken to read the log itself
            assert not stream.live and waiter.live  # the waiter needs no lines
            while not events.logs_live:
                await asyncio.sleep(0.01)
        assert logs.opened == 2
    finally:
        follow.cancel()
    said = [r.getMessage() for r in caplog.records if r.name == "api.run_events"]
    assert any("no log lines (cut): streams read logs every 0 s" in s for s in said)


def test_a_stream_that_falls_behind_reads_the_log_instead() -> None:
    events = RunEvents()
    watch = run_events.Watch(events, lines=True)
    for n in range(run_events.MAX_HELD_LINES + 5):
        watch.hand(log_line(uuid.uuid4(), str(n)), 0.0)
    assert watch.overflowed
    assert len(watch.take_lines()) == 5
