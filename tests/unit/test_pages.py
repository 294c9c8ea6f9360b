"""Stable pages (`api.pages`) over a fake of Prefect's lists: sorted by position only, ties
in any order, rows arriving between reads, some late."""

import base64
import datetime as dt
import random
import uuid
from collections import Counter

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from prefect.client.schemas.objects import Log

from api import pages
from api.pages import Cursor, CursorError
from api.routers import page_cursor as _cursor
from common.web.problems import Problem

SECOND = 1_000_000  # positions are microseconds
WINDOW = pages.WINDOW // pages.MICROSECOND
Row = tuple[int, str]


class Store:
    """What Prefect does: rows at or after a start, by position only, ties shuffled."""

    def __init__(self, seed: int = 0) -> None:
        self.rows: list[Row] = []
        self.shuffle = random.Random(seed).shuffle
        self.n = 0

    def add(self, *positions: int) -> list[Row]:
        added = []
        for pos in positions:
            self.n += 1
            added.append((pos, f"{uuid.UUID(int=self.n)}"))
        self.rows += added
        return added

    def read(self, read: pages.Read) -> list[Row]:
        assert read.size <= pages.BACKEND_MAX
        rows = [r for r in self.rows if read.start is None or r[0] >= read.start]
        self.shuffle(rows)
        return sorted(rows, key=lambda r: r[0])[: read.size]


def page(store: Store, cursor: Cursor, limit: int) -> pages.Page[Row]:
    read = pages.plan(cursor, limit)
    return pages.turn(cursor, read, store.read(read), lambda row: row)


def drain(store: Store, cursor: Cursor, limit: int) -> tuple[list[list[Row]], Cursor]:
    """Every page until none says there are more; checks each is ordered."""
    got = []
    while True:
        result = page(store, cursor, limit)
        assert result.items == sorted(result.items)
        assert len(result.items) <= limit
        got.append(result.items)
        cursor = result.cursor
        # The cursor survives its trip through a URL.
        assert pages.decode(pages.encode(cursor, "s"), "s") == cursor
        if not result.more:
            return got, cursor


def flat(pages_: list[list[Row]]) -> list[Row]:
    return [row for items in pages_ for row in items]


def test_many_ties_across_page_boundaries() -> None:
    store = Store()
    store.add(*[5 * SECOND] * 40, *[6 * SECOND] * 3, 7 * SECOND, *[7 * SECOND] * 30)
    got, cursor = drain(store, Cursor(), limit=7)
    assert sorted(flat(got)) == sorted(store.rows) and len(flat(got)) == len(store.rows)
    assert all(got[:-1])  # a page may stop short of a tie group, but is never empty
    assert cursor.top == 7 * SECOND and cursor.low == 7 * SECOND - WINDOW


def test_pages_follow_position_then_id_when_ties_fit_in_a_page() -> None:
    store = Store(seed=3)
    store.add(*[SECOND * (i // 3) for i in range(60)])
    got, _ = drain(store, Cursor(), limit=7)
    assert flat(got) == sorted(store.rows)


def test_rows_added_while_paging_are_neither_skipped_nor_repeated() -> None:
    store = Store(seed=1)
    store.add(*range(0, 20 * SECOND, SECOND // 4))
    first = page(store, Cursor(), limit=10)
    # A batch arrives late, older than what was given (but within the window), with ties.
    late = store.add(SECOND // 8, 2 * SECOND, 2 * SECOND, first.cursor.top)
    rest, _ = drain(store, first.cursor, limit=10)
    seen = first.items + flat(rest)
    assert len(seen) == len(set(seen)) == len(store.rows)
    assert set(late) <= set(flat(rest))


def test_a_row_later_than_the_window_is_missed_but_nothing_repeats() -> None:
    store = Store()
    store.add(*range(0, 30 * SECOND, SECOND))
    first = page(store, Cursor(), limit=30)
    assert first.cursor.low == 29 * SECOND - WINDOW and not first.more
    missed, caught = store.add(first.cursor.low - 1, first.cursor.low)
    rest, _ = drain(store, first.cursor, limit=30)
    assert flat(rest) == [caught] and missed not in flat(rest)


def test_an_empty_page_keeps_the_cursor_and_the_list_can_grow() -> None:
    store = Store()
    empty = page(store, Cursor(), limit=5)
    assert empty.items == [] and not empty.more and empty.cursor == Cursor()
    store.add(SECOND, 2 * SECOND)
    full = page(store, empty.cursor, limit=5)
    again = page(store, full.cursor, limit=5)
    assert len(full.items) == 2 and again.items == [] and again.cursor == full.cursor


def test_newest_first_a_run_created_while_paging_does_not_shift_the_pages() -> None:
    now = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    store = Store()
    times = [now - dt.timedelta(minutes=m) for m in range(12)] + [now - dt.timedelta(hours=1)] * 5
    store.add(*(pages.position(t, newest_first=True) for t in times))
    first = page(store, Cursor(), limit=5)
    store.add(pages.position(now + dt.timedelta(seconds=1), newest_first=True))  # a new run
    rest, _ = drain(store, first.cursor, limit=5)
    listed = [pages.moment(pos, newest_first=True) for pos, _ in first.items + flat(rest)]
    assert listed == sorted(times, reverse=True)  # newest first, each once, the new run not
    assert (
        pages.moment(first.cursor.low, newest_first=True)
        == now - dt.timedelta(minutes=4) + pages.WINDOW
    )


def test_positions_of_prefect_times_are_exact() -> None:
    moment = dt.datetime(2026, 11, 29, 20, 1, 2, 345678, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    log = Log(name="x", level=20, message="m", timestamp=moment, flow_run_id=uuid.uuid4())
    assert pages.position(log.timestamp) == pages.position(moment)  # a pendulum time
    assert pages.moment(pages.position(moment)) == moment
    assert pages.moment(pages.position(moment, newest_first=True), newest_first=True) == moment


def test_a_busy_window_narrows_but_never_past_rows_not_given() -> None:
    store = Store()
    store.add(*range(0, 5 * SECOND, SECOND // 100))  # 500 rows in 5 s, all within the window
    got, cursor = drain(store, Cursor(), limit=200)
    assert len(flat(got)) == 500 and len(set(flat(got))) == 500
    assert len(cursor.seen) <= pages.CARRY_TARGET and cursor.low > cursor.top - WINDOW
    # Rows already there but not given are never narrowed past, even with late ones ahead.
    store = Store(seed=2)
    store.add(*range(0, 3 * SECOND, SECOND // 100))
    first = page(store, Cursor(), limit=150)
    store.add(*range(first.cursor.top - SECOND // 2, first.cursor.top, SECOND // 1000))
    rest, _ = drain(store, first.cursor, limit=20)
    assert sorted(first.items + flat(rest)) == sorted(store.rows)


@pytest.mark.parametrize(
    "text",
    [
        "garbage",
        "e30=",  # the old offset cursors: base64 JSON
        "AAAA",
        pages.encode(Cursor(5, 3, frozenset([b"12345678"])), "s") + "AA",  # a stray byte
        pages.encode(Cursor(5, 3, frozenset([b"12345678"])), "s") + "=",  # padded
        pages.encode(Cursor(5, 3), "s").replace("AQ", "Ag", 1),  # another version
        pages.encode(Cursor(3, 5), "s"),  # starts past its top
        pages.encode(Cursor(10**18, 0), "s"),  # a time no backend takes
        pages.encode(Cursor(5, 3, frozenset(bytes([i]) * 8 for i in range(151))), "s"),
        pages.encode(Cursor(5, 3), "another list"),
    ],
)
def test_a_cursor_the_api_did_not_give_out_is_refused(text: str) -> None:
    with pytest.raises(CursorError):
        pages.decode(text, "s")
    with pytest.raises(Problem) as problem:
        _cursor(text, "s")
    assert problem.value.status == 422
    assert problem.value.errors[0]["field"] == "query.cursor"


def test_a_run_log_is_settled_a_window_after_the_run_ended() -> None:
    ended = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    pendulum_ended = Log(name="x", level=20, message="m", timestamp=ended).timestamp
    assert not pages.settled(pendulum_ended, now=ended + pages.WINDOW / 2)
    assert not pages.settled(None)
    assert not pages.settled(ended, now=ended + pages.WINDOW / 2)
    assert pages.settled(ended, now=ended + pages.WINDOW)


@settings(max_examples=150, deadline=None)
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.integers(1, 25)),
            # rows arriving: how many, how far behind the reader's start, how spread
            st.tuples(st.just("add"), st.integers(1, 40), st.integers(0, 3 * WINDOW)),
        ),
        max_size=30,
    ),
    spread=st.sampled_from([0, 1, SECOND // 10, SECOND]),
    seed=st.integers(0, 2**16),
)
def test_no_row_twice_none_skipped_that_arrived_at_or_after_the_start(
    steps: list[tuple[str, int] | tuple[str, int, int]], spread: int, seed: int
) -> None:
    store, rng = Store(seed), random.Random(seed)
    cursor, given_rows, promised = Cursor(), [], set()
    for step in steps:
        if step[0] == "read":
            result = page(store, cursor, step[1])
            given_rows += result.items
            cursor = result.cursor
            continue
        _, count, behind = step
        base = 100 * SECOND if cursor.top is None else cursor.top - behind
        added = store.add(*(base + rng.randint(0, spread) for _ in range(count)))
        # The promise: rows at or after where the next read starts are given, once.
        promised |= {row for row in added if cursor.low is None or row[0] >= cursor.low}
    # The one case the promise leaves out: more rows than a cursor carries at one microsecond.
    assume(max(Counter(pos for pos, _ in store.rows).values(), default=0) <= pages.CARRY_TARGET)
    rest, _ = drain(store, cursor, limit=17)
    given_rows += flat(rest)
    assert len(given_rows) == len(set(given_rows))
    assert promised <= set(given_rows)


@given(
    text=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda raw: base64.urlsafe_b64encode(raw).decode().rstrip("=")),
    )
)
def test_any_text_is_a_cursor_or_refused(text: str) -> None:
    try:
        cursor = pages.decode(text, "s")
    except CursorError:
        return
    assert pages.encode(cursor, "s") == text or not text
