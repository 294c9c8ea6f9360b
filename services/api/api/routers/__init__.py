"""The API's routes, one router per resource; the problems they answer with, and the
cursor pages their lists share (api.pages)."""

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from fastapi import Request

from api import pages
from common.web import problems
from common.web.db import blocking
from common.web.problems import Problem

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = problems.responses(
    {
        400: "The body could not be parsed",
        401: "No, unknown, expired or revoked API key",
        403: "The key's role is not enough for this route",
        404: "Unknown run, flow or key",
        413: "Body too large",
        422: "Invalid request, with per-field errors",
        429: "Rate limited (see Retry-After)",
        503: "Prefect or the database is unavailable (see Retry-After)",
    }
)


def page_cursor(text: str | None, scope: str) -> pages.Cursor:
    """The cursor a client sent back (a 422 if this API did not give it out for `scope`)."""
    try:
        return pages.decode(text, scope)
    except pages.CursorError as error:
        raise Problem(
            422,
            "validation-error",
            f"cursor is not one this API gave out: {error}",
            errors=[{"field": "query.cursor", "message": str(error)}],
        ) from None


def next_url(request: Request, cursor: pages.Cursor, scope: str) -> str:
    return str(request.url.include_query_params(cursor=pages.encode(cursor, scope)))


class Created(Protocol):
    """A stored thing listed oldest first: keys, people, sessions."""

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def created_at(self) -> dt.datetime: ...


C = TypeVar("C", bound=Created)


async def oldest_first(
    request: Request,
    text: str | None,
    limit: int,
    scope: str,
    load: Callable[[int, dt.datetime | None], Sequence[C]],
) -> tuple[list[C], str | None]:
    """A page of a list ordered by (created_at, id), and the URL of the next one (None at
    the end). `load(size, since)` reads up to `size` items created at or after `since`
    (None: from the start); it blocks, so it runs in a thread."""
    at = page_cursor(text, scope)
    read = pages.plan(at, limit)
    since = None if read.start is None else pages.moment(read.start)
    found = await blocking(load, read.size, since)
    page = pages.turn(
        at, read, found, lambda item: (pages.position(item.created_at), item.id),
        window=pages.RUNS_WINDOW,
    )  # fmt: skip
    return page.items, (next_url(request, page.cursor, scope) if page.more else None)
