"""api.run_stream and GET /runs/{id}/events in-process, over a fake Prefect (testkit.apps)
and a RunEvents the test feeds: states and lines as they come, one time line, the end
after the last lines; a resumed stream gives what follows its Last-Event-ID and nothing
twice; many streams of one run share one read per event; polling is said. On a real stack:
tests/integration/test_api.py."""

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prefect.client.schemas.objects import Log, StateType

from api import pages, run_stream
from api.run_events import RunEvents
from api.run_stream import Position, PositionError, RunStream
from testkit import sse
from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_stream, "SETTLE_SECONDS", 0.05)


@pytest.fixture
def prefect() -> FakePrefect:
    prefect = FakePrefect()
    prefect.add_flow("load-data", {})
    return prefect


def live_events() -> RunEvents:
    """Subscriptions up, fed by the test (`wake`, `_on_line`)."""
    events = RunEvents()
    events.live = events.logs_live = True
    return events


def line(run_id: uuid.UUID, message: str, at: dt.datetime) -> Log:
    return Log(name="flow", level=20, message=message, timestamp=at, flow_run_id=run_id)


async def end_of(run_id: uuid.UUID) -> dict[str, Any]:
    return {"id": str(run_id)}


async def collect(stream: RunStream, into: list[Any]) -> None:
    async for event in stream.events():
        into.append(event)


async def until(got: list[Any], count: int, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while len(got) < count:
            await asyncio.sleep(0.01)


async def complete(
    prefect: FakePrefect, events: RunEvents, run_id: uuid.UUID, *streams: Any, timeout: float = 5
) -> None:
    """The run completes now and its event comes: wait for `streams` (tasks) to end."""
    prefect.move(run_id, StateType.COMPLETED, dt.datetime.now(dt.UTC))
    events.wake(run_id)
    await asyncio.wait_for(asyncio.gather(*streams), timeout)


def said(events: list[Any]) -> list[tuple[str, str]]:
    """(kind, state type or message) of each state and log event."""
    out = []
    for event in events:
        if event.event == "state":
            out.append(("state", event.data["type"]))
        elif event.event == "log":
            out.append(("log", event.data["message"]))
    return out


# -- the position a client resumes from ----------------------------------------------------

POSITIONS = st.builds(
    lambda states, top, spread, ids: Position(
        states,
        top,
        top - spread,
        {pages.digest(i): top - (n % (spread + 1)) for n, i in enumerate(ids)},
    ),
    st.integers(0, 10**6),
    st.integers(0, 2 * 10**15),
    st.integers(0, 10**7),
    st.lists(st.uuids(), max_size=pages.CARRY_TARGET),
)


@given(POSITIONS)
def test_a_position_reads_back_as_it_was_written(position: Position) -> None:
    run = uuid.UUID(int=1)
    back = Position.decode(position.encode(run), run)
    assert (back.states, back.top, back.low) == (position.states, position.top, position.low)
    assert back.window.keys() == position.window.keys()


@given(st.text(max_size=300))
def test_any_other_text_is_refused_as_an_event_id(text: str) -> None:
    run = uuid.UUID(int=1)
    try:
        position = Position.decode(text, run)
    except PositionError:
        return
    assert position.encode(run) == text or not text


def test_an_event_id_of_another_run_or_malformed_is_refused() -> None:
    mine, other = uuid.uuid4(), uuid.uuid4()
    given_id = Position(2, 5_000_000, 0, {pages.digest("a"): 5_000_000}).encode(mine)
    assert Position.decode(given_id, mine).states == 2
    for text in [given_id.replace("2.", "02.", 1), "x", "3", "-1.", "1.!!", " 1.", "\u0661."]:
        with pytest.raises(PositionError):
            Position.decode(text, mine)
    with pytest.raises(PositionError, match="another list"):
        Position.decode(given_id, other)


# -- a stream ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_states_and_lines_come_as_they_happen_then_the_end(prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", expected=T0 - dt.timedelta(seconds=1))
    events, got = live_events(), []
    reads = {"logs": 0}
    read_logs = prefect.logs

    async def counted(*args: Any) -> list[Log]:
        reads["logs"] += 1
        return await read_logs(*args)

    prefect.logs = counted  # type: ignore[method-assign]
    async with events.watch(run.id, lines=True) as watch:
        stream = RunStream(run.id, Position(), prefect, watch, lambda: end_of(run.id))
        task = asyncio.create_task(collect(stream, got))
        await until(got, 1)
        assert said(got) == [("state", "SCHEDULED")] and reads["logs"] == 1  # caught up
        prefect.move(run.id, StateType.RUNNING, T0)
        events.wake(run.id)
        await until(got, 2)
        events._on_line(line(run.id, "second", T0 + dt.timedelta(seconds=2)))
        events._on_line(line(run.id, "first", T0 + dt.timedelta(seconds=1)))
        events._on_line(line(uuid.uuid4(), "another run's", T0))
        await until(got, 4)
        assert reads["logs"] == 1  # the lines came with the subscription: no read
        # The final state, and a line that reaches Prefect but not the subscription.
        prefect.add_log(run, "late", T0 + dt.timedelta(seconds=3))
        await complete(prefect, events, run.id, task)
    assert said(got) == [
        ("state", "SCHEDULED"),
        ("state", "RUNNING"),
        ("log", "first"),  # a batch in time order
        ("log", "second"),
        ("state", "COMPLETED"),
        ("log", "late"),  # the last read, once settled, finds it
    ]
    assert got[-1].event == "end" and got[-1].data == {"id": str(run.id)}
    assert "notice" not in [e.event for e in got]


@pytest.mark.anyio
async def test_a_line_that_outruns_its_state_event_is_given_after_that_state(
    prefect: FakePrefect,
) -> None:
    """A busy server can deliver the flow's first line before the event of RUNNING, which
    was set before it: the stream reads the states again as of the line, and gives RUNNING
    first, though the states read a moment ago (cached) said SCHEDULED."""
    run = prefect.add_run("load-data", expected=T0 - dt.timedelta(seconds=1))
    events, got = live_events(), []
    async with events.watch(run.id, lines=True) as watch:
        stream = RunStream(run.id, Position(), prefect, watch, lambda: end_of(run.id))
        task = asyncio.create_task(collect(stream, got))
        await until(got, 1)
        prefect.move(run.id, StateType.RUNNING, T0)  # its event not in yet
        events._on_line(line(run.id, "first", T0 + dt.timedelta(seconds=1)))
        await until(got, 3)
        await complete(prefect, events, run.id, task)
    assert said(got) == [
        ("state", "SCHEDULED"),
        ("state", "RUNNING"),
        ("log", "first"),
        ("state", "COMPLETED"),
    ]


@pytest.mark.anyio
async def test_a_resumed_stream_gives_what_follows_and_nothing_twice(
    prefect: FakePrefect,
) -> None:
    run = prefect.add_run("load-data", expected=T0 - dt.timedelta(seconds=1))
    prefect.move(run.id, StateType.PENDING, T0)
    prefect.move(run.id, StateType.RUNNING, T0 + dt.timedelta(seconds=1))
    for n in range(250):  # more than a read's page, some at one instant
        prefect.add_log(run, f"line {n}", T0 + dt.timedelta(seconds=1, milliseconds=n // 3))
    prefect.move(run.id, StateType.FAILED, T0 + dt.timedelta(seconds=2))
    events = live_events()

    async def stream(last_event_id: str | None) -> list[Any]:
        got: list[Any] = []
        async with events.watch(run.id, lines=True) as watch:
            position = Position.decode(last_event_id, run.id)
            await collect(RunStream(run.id, position, prefect, watch, lambda: end_of(run.id)), got)
        return [e for e in got if e.event in ("state", "log")]

    whole = await stream(None)
    assert len(whole) == 4 + 250
    assert said(whole)[:3] == [("state", "SCHEDULED"), ("state", "PENDING"), ("state", "RUNNING")]
    assert said(whole)[-1] == ("state", "FAILED")
    for k in (0, 2, 3, 100, 180, 252):
        assert said(await stream(whole[k].id)) == said(whole)[k + 1 :], k


@pytest.mark.anyio
async def test_streams_of_one_run_share_one_read_of_its_states_per_event(
    prefect: FakePrefect,
) -> None:
    run = prefect.add_run("load-data")
    events = live_events()
    got: list[list[Any]] = [[] for _ in range(200)]

    async def one(into: list[Any]) -> None:
        async with events.watch(run.id, lines=True) as watch:
            await collect(
                RunStream(run.id, Position(), prefect, watch, lambda: end_of(run.id)), into
            )

    tasks = [asyncio.create_task(one(into)) for into in got]
    for into in got:
        await until(into, 1)
    before = prefect.states_read.fetches
    prefect.move(run.id, StateType.RUNNING, T0)
    events.wake(run.id)
    for into in got:
        await until(into, 2)
    assert prefect.states_read.fetches - before == 1
    await complete(prefect, events, run.id, *tasks, timeout=10)
    assert all(said(into)[-1] == ("state", "COMPLETED") for into in got)
    assert events.watched == 0


@pytest.mark.anyio
async def test_a_stream_says_when_it_polls_and_when_it_is_live_again(
    prefect: FakePrefect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("api.run_events.POLL_SECONDS", 0.05)
    run = prefect.add_run("load-data")
    events, got = RunEvents(), []  # not following yet
    async with events.watch(run.id, lines=True) as watch:
        task = asyncio.create_task(
            collect(RunStream(run.id, Position(), prefect, watch, lambda: end_of(run.id)), got)
        )
        await until(got, 2)
        assert got[0].event == "notice" and got[0].data["mode"] == "polling"
        prefect.add_log(run, "read while polling", T0)
        await until(got, 3)  # polling reads the log: the line comes all the same
        assert got[2].data["message"] == "read while polling"
        events.live = events.logs_live = True
        await until(got, 4)
        assert got[3].event == "notice" and got[3].data["mode"] == "live"
        prefect.move(run.id, StateType.CANCELLED, dt.datetime.now(dt.UTC))
        events.wake(run.id)
        await asyncio.wait_for(task, 5)
    assert [e.event for e in got][-2:] == ["state", "end"]


@pytest.mark.anyio
async def test_prefect_away_mid_stream_is_said_and_nothing_is_lost(
    prefect: FakePrefect,
) -> None:
    run = prefect.add_run("load-data", expected=T0 - dt.timedelta(seconds=1))
    prefect.states_read.ttl = 0.05  # the stream's next read comes that much sooner
    events, got = live_events(), []
    async with events.watch(run.id, lines=True) as watch:
        task = asyncio.create_task(
            collect(RunStream(run.id, Position(), prefect, watch, lambda: end_of(run.id)), got)
        )
        await until(got, 1)
        prefect.down = True
        prefect.move(run.id, StateType.RUNNING, T0)
        events._on_line(line(run.id, "held while Prefect is away", T0))
        events.wake(run.id)
        await until(got, 2)
        assert got[1].event == "notice" and got[1].data["mode"] == "polling"
        assert "the Prefect API is unavailable" in got[1].data["detail"]
        prefect.down = False
        await until(got, 5)
        assert got[2].event == "notice" and got[2].data["mode"] == "live"
        await complete(prefect, events, run.id, task)
    assert said(got) == [
        ("state", "SCHEDULED"),
        ("state", "RUNNING"),
        ("log", "held while Prefect is away"),
        ("state", "COMPLETED"),
    ]


# -- the route ----------------------------------------------------------------------------


def test_the_route_streams_a_run_to_its_end(prefect: FakePrefect) -> None:
    database = FakeDatabase()
    viewer = database.add_key("looker", "viewer")
    run = prefect.add_run("load-data", StateType.RUNNING)
    prefect.add_log(run, "working", dt.datetime.now(dt.UTC))
    prefect.move(run.id, StateType.COMPLETED, dt.datetime.now(dt.UTC))
    client = TestClient(api_app(prefect, database))
    response = client.get(f"/runs/{run.id}/events", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    events = sse.parse(response.text)
    kinds = [e["event"] for e in events]
    assert kinds == ["notice", "state", "log", "state", "end"]  # testkit's events do not follow
    assert events[-1]["data"]["id"] == str(run.id)


def test_the_route_refuses_an_unknown_run_and_a_bad_event_id(prefect: FakePrefect) -> None:
    client = TestClient(api_app(prefect, FakeDatabase()))
    unknown = client.get(f"/runs/{uuid.uuid4()}/events", headers=AUTH)
    assert unknown.status_code == 404 and unknown.json()["type"] == "/problems/not-found"
    run = prefect.add_run("load-data")
    bad = client.get(f"/runs/{run.id}/events", headers=AUTH | {"Last-Event-ID": "7"})
    assert bad.status_code == 422, bad.text
    assert bad.json()["errors"][0]["field"] == "header.last-event-id"
    assert client.get(f"/runs/{run.id}/events").status_code == 401
