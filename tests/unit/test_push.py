"""agent.push: a poll per burst of Scheduled events and of freed slots, none while the
worker is full, the subscription opened again when it fails, the run's deployment and flow
read ahead beside the poll, and the worker's polling loop wrapped for its poll only. On a
real server: tests/integration/test_push.py."""

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from prefect.events.schemas.events import Event

from agent import push
from agent.push import SCHEDULED, PushedPoll, poll_on_events, related_ids, scheduled_in
from common import prefect_events


class FakeEvents:
    """Subscriptions whose events the test sends; the filters asked for; failures to come."""

    def __init__(self, failures: int = 0) -> None:
        self.filters: list[Any] = []
        self.failures = failures
        self.send, self.receive = anyio.create_memory_object_stream[str](100)

    @asynccontextmanager
    async def subscribe(self, event_filter: Any) -> AsyncIterator[AsyncIterator[str]]:
        self.filters.append(event_filter)
        if self.failures:
            self.failures -= 1
            raise ConnectionRefusedError("server away")
        yield self.receive


def test_the_filter_asks_for_runs_scheduled_in_the_pool() -> None:
    wire = scheduled_in("training").model_dump(mode="json")
    assert wire["event"]["name"] == [SCHEDULED]
    assert wire["related"]["labels"] == {
        "prefect.resource.role": "work-pool",
        "prefect.resource.name": "training",
    }


@pytest.mark.anyio
async def test_each_event_brings_a_poll_and_a_burst_only_one_more() -> None:
    events = FakeEvents()
    polls: list[int] = []
    release = anyio.Event()

    async def poll() -> None:
        polls.append(len(polls))
        if len(polls) == 1:
            await release.wait()  # the first poll is slow: a burst arrives meanwhile

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(poll_on_events, PushedPoll(poll), "training", events.subscribe)
            await events.send.send("one")
            while not polls:
                await anyio.sleep(0.01)
            for n in range(10):  # the burst, during the first poll
                await events.send.send(f"burst {n}")
            await anyio.sleep(0.05)
            release.set()
            await anyio.sleep(0.1)
            assert len(polls) == 2  # the first, then one for the whole burst
            await events.send.send("later")
            while len(polls) < 3:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert len(events.filters) == 1


def scheduled_event(*related: tuple[str, str]) -> Event:
    return Event(
        event=SCHEDULED,
        resource={"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}"},
        related=[
            {"prefect.resource.id": rid, "prefect.resource.role": role} for role, rid in related
        ],
    )


def test_a_scheduled_event_names_its_run_s_deployment_and_flow() -> None:
    deployment, flow = uuid.uuid4(), uuid.uuid4()
    event = scheduled_event(
        ("flow", f"prefect.flow.{flow}"),
        ("deployment", f"prefect.deployment.{deployment}"),
        ("work-pool", f"prefect.work-pool.{uuid.uuid4()}"),
        ("tag", "prefect.tag.api"),
    )
    assert related_ids(event) == {"deployment": deployment, "flow": flow}
    assert related_ids(scheduled_event(("deployment", "prefect.deployment.not-an-id"))) == {}


@pytest.mark.anyio
async def test_an_event_reads_its_run_s_deployment_and_flow_ahead_beside_the_poll() -> None:
    deployment, flow = uuid.uuid4(), uuid.uuid4()
    asked: list[tuple[str, uuid.UUID]] = []
    polled = anyio.Event()

    class Client:
        async def read_deployment(self, object_id: uuid.UUID) -> None:
            asked.append(("deployment", object_id))
            await polled.wait()  # still on its way as the poll runs: beside it, not after

        async def read_flow(self, object_id: uuid.UUID) -> None:
            asked.append(("flow", object_id))
            raise RuntimeError("server away")  # the worker's own read meets it, later

    worker = SimpleNamespace(_client=Client())
    events = FakeEvents()

    async def poll() -> None:
        polled.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            ahead = functools.partial(push.read_ahead, worker)
            group.start_soon(
                functools.partial(
                    poll_on_events, PushedPoll(poll), "training", events.subscribe, ahead
                )
            )
            await events.send.send(
                scheduled_event(
                    ("deployment", f"prefect.deployment.{deployment}"),
                    ("flow", f"prefect.flow.{flow}"),
                )
            )
            await polled.wait()
            while len(asked) < 2:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert sorted(asked) == sorted([("deployment", deployment), ("flow", flow)])
    # A worker not set up (or torn down) has no client, and a full one takes no run: neither
    # reads anything.
    await push.read_ahead(SimpleNamespace(_client=None), scheduled_event())
    full = SimpleNamespace(_client=Client(), _limiter=anyio.CapacityLimiter(1))
    await full._limiter.acquire_on_behalf_of("a run")
    asked.clear()
    await push.read_ahead(full, scheduled_event(("flow", f"prefect.flow.{flow}")))
    assert asked == []
    full._limiter.release_on_behalf_of("a run")
    await push.read_ahead(full, scheduled_event(("flow", f"prefect.flow.{flow}")))
    assert asked == [("flow", flow)]


@pytest.mark.anyio
async def test_a_failed_poll_does_not_end_the_push(caplog: pytest.LogCaptureFixture) -> None:
    events = FakeEvents()
    calls = 0

    async def poll() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("server said 503")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(poll_on_events, PushedPoll(poll), "training", events.subscribe)
            for _ in range(2):
                await events.send.send("scheduled")
                await anyio.sleep(0.05)
            group.cancel_scope.cancel()
    assert calls == 2


@pytest.mark.anyio
async def test_a_failed_subscription_is_retried_and_said(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefect_events, "RETRY_SECONDS", (0.01,))
    events = FakeEvents(failures=2)
    polled = anyio.Event()

    async def poll() -> None:
        polled.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(poll_on_events, PushedPoll(poll), "training", events.subscribe)
            while len(events.filters) < 3:
                await anyio.sleep(0.01)
            await events.send.send("scheduled")
            await polled.wait()
            group.cancel_scope.cancel()
    assert len(events.filters) == 3
    said = [r.getMessage() for r in caplog.records if r.name == "agent.push"]
    assert sum("no event subscription (server away)" in line for line in said) == 2
    assert "polling on the interval alone" in said[0]


@pytest.mark.anyio
async def test_install_wraps_the_worker_s_poll_loop_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.workers import base

    looped: list[str] = []
    pushed: list[str] = []

    async def original(workload: Any, interval: float, run_once: bool = False, **_: Any) -> None:
        looped.append(workload.__name__)
        await anyio.sleep(0.2)

    async def fake_push(pushed_poll: PushedPoll, pool: str, read_ahead: Any = None) -> None:
        pushed.append(f"{pushed_poll.poll.__name__} {pool} {read_ahead is not None}")
        await anyio.sleep_forever()

    monkeypatch.setattr(base, "critical_service_loop", original)
    monkeypatch.setattr(push, "poll_on_events", fake_push)
    push.install("training")
    push.install("training")  # twice: still one wrapper
    wrapped = base.critical_service_loop
    assert wrapped is not original and wrapped.pushes_to == "training"

    class Worker:
        _limiter = None

        async def get_and_submit_flow_runs(self) -> None: ...
        async def _sync_and_initialize(self) -> None: ...
        def _release_limit_slot(self, flow_run_id: object) -> None: ...

    worker = Worker()
    with anyio.fail_after(5):
        await wrapped(workload=worker.get_and_submit_flow_runs, interval=1)
        await wrapped(workload=worker._sync_and_initialize, interval=1)
        await wrapped(workload=worker.get_and_submit_flow_runs, interval=1, run_once=True)
    assert looped == [
        "get_and_submit_flow_runs",
        "_sync_and_initialize",
        "get_and_submit_flow_runs",
    ]
    # The loop's poll, pushed; once. It reads ahead only if the client remembers reads.
    assert pushed == [f"get_and_submit_flow_runs training {push.remembers_reads()}"]


class Limited:
    """Prefect's worker, as far as push sees it: a limiter of `limit` slots and its poll."""

    def __init__(self, limit: int | None) -> None:
        self._limiter = anyio.CapacityLimiter(limit) if limit else None
        self._last_polled_time = None
        self.polls = 0
        self.released: list[str] = []

    async def get_and_submit_flow_runs(self) -> list[str]:
        self.polls += 1
        return ["a run"]

    def _release_limit_slot(self, flow_run_id: str) -> None:
        assert self._limiter is not None
        self._limiter.release_on_behalf_of(flow_run_id)
        self.released.append(flow_run_id)


@pytest.mark.anyio
async def test_a_full_worker_does_not_query_but_counts_as_polling() -> None:
    worker = Limited(2)
    poll = push.unless_full(worker.get_and_submit_flow_runs)
    assert poll.__name__ == push.POLL_WORKLOAD
    assert await poll() == ["a run"] and worker.polls == 1
    assert worker._limiter is not None
    worker._limiter.acquire_on_behalf_of_nowait("one")
    assert await poll() == ["a run"] and worker.polls == 2  # one slot free: it queries
    worker._limiter.acquire_on_behalf_of_nowait("two")
    assert push.free_slots(worker) == 0
    assert await poll() == [] and worker.polls == 2  # full: no query
    assert worker._last_polled_time is not None  # the health check sees a live loop
    worker._release_limit_slot("one")
    assert await poll() == ["a run"] and worker.polls == 3


@pytest.mark.anyio
async def test_a_worker_without_a_limit_always_queries() -> None:
    worker = Limited(None)
    assert push.free_slots(worker) is None
    poll = push.unless_full(worker.get_and_submit_flow_runs)
    for _ in range(3):
        await poll()
    assert worker.polls == 3


@pytest.mark.anyio
async def test_a_freed_slot_brings_a_poll_at_once() -> None:
    worker = Limited(1)
    pushed = PushedPoll(push.unless_full(worker.get_and_submit_flow_runs))
    push.wake_on_release(worker, pushed)
    assert worker._limiter is not None
    worker._limiter.acquire_on_behalf_of_nowait("run")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(pushed.run)
            await anyio.sleep(0.05)
            assert worker.polls == 0  # nothing woke it
            worker._release_limit_slot("run")  # the run ended
            while worker.polls < 1:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    assert worker.released == ["run"] and worker.polls == 1
