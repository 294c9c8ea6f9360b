"""Stable pages over Prefect's lists: a keyset cursor with an overlap window and ids seen.

Prefect sorts logs by timestamp and runs by expected start time, with no tie-breaker and no
filter by id, and a run's log lines reach it in batches, some later than newer ones. Paging
by offset then skips or repeats rows. Here a page instead reads every row from a little
before the furthest one given so far (the *window*) and drops those the cursor says were
given already; the cursor carries that position and short hashes of the rows given within
the window. Rows are placed on one axis, `position` (microseconds, negated for a newest-first
list), so one piece of code pages both ways.

The guarantee (stated in docs/api.md): no row is given twice, and no row is skipped that had
reached Prefect when the page was read. A row that reaches Prefect after a row more than the
window newer than it was given may be missed.
"""

import base64
import binascii
import calendar
import dataclasses
import datetime as dt
import hashlib
import struct
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

# Prefect's API log handler sends lines every 2 s (PREFECT_LOGGING_TO_API_BATCH_INTERVAL);
# 10 s leaves room for a slow flush or a second process's batch (the worker's).
WINDOW = dt.timedelta(seconds=10)
# Runs enter their list at its head (a new run is expected to start now or later), so theirs
# needs no window: the cursor carries only the ids tied at its end.
RUNS_WINDOW = dt.timedelta(0)
# The ids a cursor carries: beyond this many rows within the window, the window narrows to
# the newest of them (never past rows not given yet). A page may carry a few more (rows that
# tie at its end, or late rows); never more than CARRY_MAX.
CARRY_TARGET = 100
CARRY_MAX = 150
# What one read of Prefect may ask for (PREFECT_SERVER_API_DEFAULT_LIMIT's default).
BACKEND_MAX = 200

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MICROSECOND = dt.timedelta(microseconds=1)
# A cursor's positions lie within about a thousand years of 1970, which every backend takes.
POSITION_LIMIT = (dt.datetime(3000, 1, 1, tzinfo=dt.UTC) - EPOCH) // MICROSECOND
VERSION = 1
HEADER = struct.Struct(">BB4sqq")  # version, started (0 or 1), scope hash, top, low
DIGEST_BYTES = 8  # 64 bits: a clash among one read's 200 rows is a 1-in-10^14 event


class CursorError(ValueError):
    """A cursor this API did not give out (or not for this list)."""


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where a client is: `top`, the furthest position given; `low`, where the next read
    starts; `seen`, the digests of every row given at `low` or beyond. None: nothing yet."""

    top: int | None = None
    low: int | None = None
    seen: frozenset[bytes] = frozenset()


@dataclasses.dataclass(frozen=True)
class Read:
    """One read of the backend: rows at position `start` or beyond (None: from the first),
    `size` of them; the page keeps up to `take` unseen ones."""

    start: int | None
    size: int
    take: int


@dataclasses.dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursor: Cursor
    more: bool  # rows not given yet were there when the page was read


def position(moment: dt.datetime, newest_first: bool = False) -> int:
    """A time on the paging axis: microseconds since 1970, negated for newest first."""
    # Integers only: Prefect's objects carry pendulum times, whose differences are not
    # timedeltas. A naive time is taken as UTC.
    micros = calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond
    return -micros if newest_first else micros


def moment(pos: int, newest_first: bool = False) -> dt.datetime:
    """The time at a position (the inverse of `position`)."""
    return EPOCH + (-pos if newest_first else pos) * MICROSECOND


def digest(row_id: object) -> bytes:
    return hashlib.blake2b(str(row_id).encode(), digest_size=DIGEST_BYTES).digest()


def plan(cursor: Cursor, limit: int) -> Read:
    """The read a page of `limit` needs: enough rows that the seen ones can be dropped, and
    one more, which tells whether more are left."""
    take = max(1, min(limit, BACKEND_MAX - 1 - len(cursor.seen)))
    return Read(cursor.low, take + len(cursor.seen) + 1, take)


def turn(
    cursor: Cursor,
    read: Read,
    rows: Sequence[T],
    key: Callable[[T], tuple[int, object]],
    window: dt.timedelta = WINDOW,
) -> Page[T]:
    """The page in `rows` (what `read` returned), ordered by (position, id), and the cursor
    after it. `key` gives a row's position and id."""
    keyed = sorted(((*key(row), row) for row in rows), key=lambda k: (k[0], str(k[1])))
    fetched = {digest(row_id): pos for pos, row_id, _ in keyed}
    unseen = [
        (pos, d, row) for pos, row_id, row in keyed if (d := digest(row_id)) not in cursor.seen
    ]
    given = unseen[: read.take]
    if len(rows) >= read.size and given and given[-1][0] == keyed[-1][0]:
        # Rows tied at the end of a full read may go on beyond it, and come in any order: leave
        # them to the next page (unless they fill this one), so pages follow (position, id).
        given = [entry for entry in given if entry[0] < keyed[-1][0]] or given
    more = len(unseen) > len(given)
    if not given:  # nothing new: the same cursor (`take` >= 1, so nothing more either)
        return Page([], cursor, more)
    top = given[-1][0] if cursor.top is None else max(cursor.top, given[-1][0])
    known = {d: pos for d, pos in fetched.items() if d in cursor.seen}
    known |= {d: pos for pos, d, _ in given}
    # Carried ids the read did not reach lie at or beyond its last row: keep them.
    unknown = cursor.seen - fetched.keys()
    # Rows not given yet lie at or beyond the page's last row: never start past it.
    frontier = given[-1][0] if more else None
    low = low_after(cursor.low, top - window // MICROSECOND, known, len(unknown), frontier)
    carried = unknown | {d for d, pos in known.items() if pos >= low}
    return Page([row for _, _, row in given], Cursor(top, low, frozenset(carried)), more)


def settled(final_since: dt.datetime | None, now: dt.datetime | None = None) -> bool:
    """Whether a run's log is done growing: it has been final (since `final_since`) for the
    window, so that its last batch of lines has arrived. None: not final."""
    if final_since is None:
        return False
    elapsed = position(now or dt.datetime.now(dt.UTC)) - position(final_since)
    return elapsed >= WINDOW // MICROSECOND


def low_after(
    previous: int | None, wanted: int, known: dict[bytes, int], unknown: int, frontier: int | None
) -> int:
    """Where the next read starts: the window's start (`wanted`), never before the previous
    one (the rows given there are not carried), narrowed when too many ids would be carried:
    `known` are the carried ids with their positions, `unknown` how many more there are
    whose positions are not known (kept whatever the start), `frontier` the first row not
    given yet (None: none left), which the start never passes. The ids at or after the
    start, with the unknown ones, are at most CARRY_MAX."""
    low = wanted if previous is None else max(previous, wanted)
    positions = sorted((pos for pos in known.values() if pos >= low), reverse=True)
    if unknown + len(positions) <= CARRY_TARGET or not positions:
        return low
    narrowed = _newest(positions, CARRY_TARGET - unknown)
    if narrowed > positions[0] and unknown + positions.count(positions[0]) <= CARRY_MAX:
        narrowed = positions[0]  # the newest rows, tied: kept, a few over the target
    if frontier is not None and frontier < narrowed:
        clamped = max(low, frontier)
        if unknown + sum(pos >= clamped for pos in positions) <= CARRY_MAX:
            return clamped
        return max(clamped, _newest(positions, CARRY_MAX - unknown))
    return narrowed


def _newest(positions_desc: list[int], count: int) -> int:
    """The lowest start that keeps at most `count` of these positions (ties kept together)."""
    if count <= 0:
        return positions_desc[0] + 1
    if count >= len(positions_desc):
        return positions_desc[-1]
    boundary = positions_desc[count]  # the first one left out
    return boundary + 1


# -- the cursor as text ----------------------------------------------------------------------


def encode(cursor: Cursor, scope: str) -> str:
    """The cursor as opaque URL-safe text, tied to its list (`scope`)."""
    started = cursor.top is not None and cursor.low is not None
    header = HEADER.pack(VERSION, started, _scope(scope), cursor.top or 0, cursor.low or 0)
    raw = header + b"".join(sorted(cursor.seen))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(text: str | None, scope: str) -> Cursor:
    """The cursor in `text` (None or empty: the first page); CursorError for any text that
    `encode` did not write for this scope."""
    if not text:
        return Cursor()
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, flags, scope_hash, top, low = HEADER.unpack_from(raw)
    except (ValueError, binascii.Error, struct.error):
        raise CursorError("not a cursor") from None
    ids = raw[HEADER.size :]
    if scope_hash != _scope(scope) and version == VERSION:
        raise CursorError("a cursor of another list (or other filters)")
    seen = frozenset(ids[i : i + DIGEST_BYTES] for i in range(0, len(ids), DIGEST_BYTES))
    if version != VERSION or flags not in (0, 1) or len(ids) % DIGEST_BYTES:
        raise CursorError("not a cursor")
    if len(seen) > CARRY_MAX:
        raise CursorError("not a cursor")
    if flags and not -POSITION_LIMIT <= low <= top + 1 <= POSITION_LIMIT:
        raise CursorError("a position out of range")
    cursor = Cursor(top, low, seen) if flags else Cursor()
    # One text per cursor: no padding, no stray bytes, ids sorted and each once.
    if encode(cursor, scope) != text:
        raise CursorError("not a cursor")
    return cursor


def _scope(scope: str) -> bytes:
    return hashlib.blake2b(scope.encode(), digest_size=4).digest()
