"""A run's states and log lines as server-sent events, for `GET /runs/{id}/events`.

A stream gives each state the run passes through (`state`) and each log line (`log`) as
they come, then, once the run is final and its last lines are in, the run as
`GET /runs/{id}` shows it (`end`), and closes. It is fed by the API process's one
subscription per kind (`api.run_events`): an event wakes it to read the run's states (one
read per event however many streams, through the gateway's cache), and the lines come with
the subscription's messages, not from a read. It reads the log from Prefect only to catch
up: when it opens, after a subscription came back, when it fell too far behind, and once
the run is final. While a subscription is down it polls, and says so (`notice`).

Every `state` and `log` event carries an id (`Position`, opaque text) from which a client
resumes with `Last-Event-ID`: the states after the ones it had, and the lines after its
position. Lines are placed by timestamp as `api.pages` places them, with its overlap window,
so a line that reaches Prefect up to `pages.WINDOW` (10 s) late is not missed by a resumed
stream either.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.sse import ServerSentEvent
from prefect.client.schemas.objects import Log, State

from api import pages
from api.prefect_gateway import FINAL, PrefectGateway
from api.run_events import Watch
from common.web.problems import Problem

# After the final state, lines still come in for a while (the engine's last batch, the
# worker's report of the process's exit): the stream waits as long as a log page waits to
# call the log settled (api.pages), then reads it a last time and ends.
SETTLE_SECONDS = pages.WINDOW.total_seconds()
# A catch-up read of a long log stops after this many pages of pages.BACKEND_MAX lines
# and goes on at the next turn, so a stream gives its first events soon.
PAGES_PER_TURN = 5
GIVEN_REMEMBERED = 20_000


class PositionError(ValueError):
    """A Last-Event-ID this API did not give out for this run."""


@dataclasses.dataclass
class Position:
    """Where a client is in a run's stream: how many states it was given, and its place in
    the log (as a `pages.Cursor`: the furthest line given, where a read starts, and the
    digests of the lines given from there on, with their positions once known)."""

    states: int = 0
    top: int | None = None
    low: int | None = None
    window: dict[bytes, int | None] = dataclasses.field(default_factory=dict)

    @staticmethod
    def scope(run_id: uuid.UUID) -> str:
        return f"events:{run_id}"

    def encode(self, run_id: uuid.UUID) -> str:
        cursor = pages.Cursor(self.top, self.low, frozenset(self.window))
        return f"{self.states}.{pages.encode(cursor, self.scope(run_id))}"

    @classmethod
    def decode(cls, text: str | None, run_id: uuid.UUID) -> Position:
        """The position in `text` (None or empty: the start); PositionError for any text
        `encode` did not write for this run."""
        if not text:
            return cls()
        states, dot, logs = text.partition(".")
        if not dot or not states.isascii() or not states.isdigit() or len(states) > 9:
            raise PositionError("not an event id of this stream")
        if str(int(states)) != states:
            raise PositionError("not an event id of this stream")
        try:
            cursor = pages.decode(logs, cls.scope(run_id))
        except pages.CursorError as error:
            raise PositionError(f"not an event id of this stream ({error})") from None
        return cls(int(states), cursor.top, cursor.low, dict.fromkeys(cursor.seen))

    def has(self, line: Log, *, before_low: bool = True) -> bool:
        """Whether the client has `line` already, as far as this position tells: one it
        carries, or (`before_low`) one before `low`. A line carried whose position was not
        known (a resumed stream's) now has it."""
        pos, key = pages.position(line.timestamp), pages.digest(line.id)
        if key in self.window:
            self.window[key] = pos
            return True
        return before_low and self.low is not None and pos < self.low

    def place(self, line: Log) -> None:
        """Count `line` as given."""
        pos, key = pages.position(line.timestamp), pages.digest(line.id)
        if self.low is not None and pos < self.low:
            return  # a line later than the window, given live: nothing to carry
        self.window[key] = pos
        self.top = pos if self.top is None else max(self.top, pos)
        self._narrow()

    def settle_unknown(self) -> None:
        """After reading the log from `low` on: lines of the window not found are dropped."""
        self.window = {k: pos for k, pos in self.window.items() if pos is not None}

    def _narrow(self) -> None:
        """Move `low` as a log page's cursor moves it (`pages.low_after`: the window behind
        `top`, narrowed when too many lines would be carried), and carry what is left."""
        assert self.top is not None
        known = {k: pos for k, pos in self.window.items() if pos is not None}
        wanted = self.top - pages.WINDOW // pages.MICROSECOND
        unknown = len(self.window) - len(known)
        self.low = pages.low_after(self.low, wanted, known, unknown, None)
        self.window = {k: p for k, p in self.window.items() if p is None or p >= self.low}


class RunStream:
    """One client's stream of one run (`events()`), over its watch of the run."""

    def __init__(
        self,
        run_id: uuid.UUID,
        position: Position,
        prefect: PrefectGateway,
        watch: Watch,
        end: Callable[[], Awaitable[Any]],
    ) -> None:
        self.run_id, self.position, self.prefect, self.watch = run_id, position, prefect, watch
        self._end = end  # the run as GET /runs/{id} shows it, for the `end` event
        self.final_since: dt.datetime | None = None  # when the run became final
        self.newest_state: dt.datetime | None = None  # the newest state's time, as last read
        # The lines given on this connection (the newest GIVEN_REMEMBERED): one that comes
        # both from a read and from the subscription is given once.
        self._given: dict[uuid.UUID, None] = {}

    def _event(self, kind: str, data: dict[str, Any]) -> ServerSentEvent:
        return ServerSentEvent(event=kind, data=data, id=self.position.encode(self.run_id))

    async def events(self) -> AsyncIterator[ServerSentEvent]:
        watch, said, first = self.watch, None, True
        watch.state_news = False  # the first read may be the cache's (see the first wait)
        while True:
            live, away = watch.live, None
            try:
                # Catch up on the first turn, and on any after one that was not live.
                news, left = await self._turn(catch_up=said != "live" or not live)
                end = await self._end() if left == 0 else None
            except Problem as problem:
                if problem.status != 503:
                    raise
                news, left, end, away = [], None, None, problem.detail  # Prefect is away
            mode = "live" if live and away is None else "polling"
            if mode != said and (said is not None or mode == "polling"):
                yield ServerSentEvent(event="notice", data=_notice(mode, away))
            said = mode
            for item in news:
                yield self._give(item)
            if end is not None:
                yield ServerSentEvent(event="end", data=end)
                return
            wait = 60.0 if left is None else left
            if first or away is not None:
                # The first read took the cache's copy (shared by the streams that open
                # together): once it has expired, read again, in case it was from before
                # this stream began watching and an event came between.
                wait, first = min(wait, self.prefect.states_read.ttl), False
            await watch.changed(wait)

    async def _turn(self, catch_up: bool) -> tuple[list[State | Log], float | None]:
        """What the client does not have yet, states and lines on one time line, and the
        seconds until the run's last lines are in (see `_settling`). Nothing is counted
        as given until `_give`: a turn that fails (Prefect away) loses nothing."""
        states = await self._new_states()
        left = self._settling()
        lines: list[Log] = []
        lines_at: float | None = None  # a states read begun after this has every state before
        if catch_up or left == 0 or self.watch.overflowed:
            self.watch.overflowed = False
            # The read's start, one per stream (held lines have one moment for all streams):
            # a line written during the read, after a state also set during it, can still
            # come first; that window is the read's few milliseconds.
            lines_at = time.monotonic()
            lines += await self._read_log(None if left == 0 else PAGES_PER_TURN)
        held_at, held = self.watch.lines_at, self.watch.take_lines()
        lines += [line for line in held if self._is_news(line, live=True)]
        if held:
            lines_at = held_at if lines_at is None else max(lines_at, held_at)
        newest = max((line.timestamp for line in lines), default=None)
        if newest is not None and lines_at is not None and self._behind(newest):
            # States and lines come over two subscriptions, which a busy server delivers in
            # either order: a line can arrive before the event of the state set before it
            # (RUNNING before the flow's first line). Read the states again as of the lines,
            # so that no line is given ahead of a state older than it. Shared by the streams
            # of the run (one moment per line), and most often already read.
            states = await self._new_states(fresh_after=lines_at)
            left = self._settling()
        items: list[State | Log] = [*states, *lines]
        unique = {item.id: item for item in items}  # a line both read and held: once
        return sorted(unique.values(), key=_order), left

    def _settling(self) -> float | None:
        """Seconds until the final run's last lines are in (0: they are); None: not final."""
        if self.final_since is None:
            return None
        elapsed = (dt.datetime.now(dt.UTC) - self.final_since).total_seconds()
        return max(SETTLE_SECONDS - elapsed, 0.0)

    def _is_news(self, line: Log, live: bool) -> bool:
        """Whether to give `line`: one not given on this connection, that the client does
        not have (or that came from the subscription: a line later than the window is still
        news)."""
        return line.id not in self._given and not self.position.has(line, before_low=not live)

    def _give(self, item: State | Log) -> ServerSentEvent:
        if isinstance(item, State):
            self.position.states += 1
            return self._event("state", _state(item))
        self._given[item.id] = None
        if len(self._given) > GIVEN_REMEMBERED:
            del self._given[next(iter(self._given))]
        self.position.place(item)
        return self._event("log", _line(item))

    def _behind(self, moment: dt.datetime) -> bool:
        """Whether the states read may lack one from before `moment`: the run is not final
        and its newest state read is older."""
        return self.final_since is None and (
            self.newest_state is None or self.newest_state < moment
        )

    async def _new_states(self, fresh_after: float | None = None) -> list[State]:
        """The states the client does not have, read as of `fresh_after` (time.monotonic())
        or fresher; and of any event that came since the last read."""
        fresh = self.watch.news_at if self.watch.state_news else None
        if fresh_after is not None:
            fresh = fresh_after if fresh is None else max(fresh, fresh_after)
        self.watch.state_news = False
        states = await self.prefect.states(self.run_id, fresh_after=fresh)
        last = states[-1] if states else None
        self.newest_state = last.timestamp if last else None
        final = last is not None and last.type in FINAL
        self.final_since = last.timestamp if final and last else None
        return states[self.position.states :]

    async def _read_log(self, pages_left: int | None) -> list[Log]:
        """The lines after the position, read from Prefect: all of them, or `pages_left`
        pages (the rest at a later turn)."""
        found: list[Log] = []
        start = self.position.low
        while pages_left is None or pages_left > 0:
            since = None if start is None else pages.moment(start)
            rows = await self.prefect.logs(self.run_id, since, pages.BACKEND_MAX)
            found += [line for line in rows if self._is_news(line, live=False)]
            if len(rows) < pages.BACKEND_MAX:
                break
            last = max(pages.position(line.timestamp) for line in rows)
            # A page of lines all at one instant: step past it rather than read it again.
            start = last if start is None or last > start else start + 1
            pages_left = None if pages_left is None else pages_left - 1
        else:
            self.watch.overflowed = True  # more to read: at the next turn
            return found
        self.position.settle_unknown()
        return found


def _order(item: State | Log) -> tuple[int, int, str]:
    """States and lines on one time line; at one instant, a state before a line."""
    return pages.position(item.timestamp), isinstance(item, Log), str(item.id)


def _state(state: State) -> dict[str, Any]:
    return {
        "type": state.type.value,
        "name": state.name,
        "message": state.message,
        "timestamp": state.timestamp.isoformat(),
    }


def _line(line: Log) -> dict[str, Any]:
    return {"timestamp": line.timestamp.isoformat(), "level": line.level, "message": line.message}


def _notice(mode: str, away: str | None) -> dict[str, Any]:
    if mode == "live":
        return {"mode": mode, "detail": "following Prefect's events and logs again"}
    if away is not None:
        return {"mode": mode, "detail": f"{away}: reading the run again every second"}
    return {
        "mode": mode,
        "detail": "Prefect's event or log subscription is down: reading the run every second",
    }
