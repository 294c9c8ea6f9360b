"""The API's routes, one router per resource; the problems they answer with, and the
cursor pages their lists share (api.pages)."""

from typing import Any

from fastapi import Request

from api import pages
from common.web import problems
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
