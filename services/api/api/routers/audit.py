"""/audit: the audit log (api.audit), newest first (admin only)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from api import pages
from api.audit import Row
from api.deps import Allowed, DatabaseDep
from api.routers import next_url, page_cursor
from api.schemas import PRINTABLE, AuditEntry, AuditPage, IsoDatetime
from common.web.auth import Role
from common.web.db import blocking

router = APIRouter(prefix="/audit", tags=["audit"])


def _row_position(row: Row) -> tuple[int, int]:
    return -row.id, row.id


@router.get("", operation_id="list_audit", response_model=AuditPage, summary="Who did what")
async def list_audit(
    request: Request,
    database: DatabaseDep,
    _: Allowed,
    actor: Annotated[
        str | None, Query(max_length=200, pattern=PRINTABLE, description="Only this key.")
    ] = None,
    method: Annotated[
        Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CLI"] | None,
        Query(
            description="Only this method (CLI: a change by `python -m api.admin`; GET and "
            "HEAD: reads the front door refused)."
        ),
    ] = None,
    since: Annotated[
        IsoDatetime | None, Query(description="Only entries at or after this ISO 8601 time.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
) -> AuditPage:
    scope = f"audit:{actor}:{method}:{since.isoformat() if since else ''}"
    at = page_cursor(cursor, scope)
    read = pages.plan(at, limit)
    up_to = None if read.start is None else -read.start
    rows = await blocking(database.audit_page, read.size, up_to, actor, method, since)
    page = pages.turn(at, read, rows, _row_position, window=pages.RUNS_WINDOW)
    return AuditPage(
        entries=[
            AuditEntry(**vars(row) | {"role": Role(row.role) if row.role else None})
            for row in page.items
        ],
        next=next_url(request, page.cursor, scope) if page.more else None,
    )
