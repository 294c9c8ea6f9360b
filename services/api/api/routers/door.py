"""/door/check: the front door's authority. nginx asks it about every request it would let
through (`auth_request`), with the original method and URI in headers and the original
credentials (Authorization, the session cookie) passed on unchanged; the role table is
`common.web.access.DOOR`. The contract: docs/api.md, "The front door".

- 204: allowed; X-Door-Caller and X-Door-Role name who (nginx passes them upstream);
- 401: no or invalid credentials (WWW-Authenticate: Bearer);
- 403: too small a role, or a request not in the table (X-Door-Reason says which);
- 429: the caller's rate limit (Retry-After).

Writes to Prefect and MLflow (allowed or not) and every refusal are appended to the audit
log, with the door's answer as their outcome (204 allowed; 401, 403 refused). Rate-limited
requests are not: they are throttled, not judged, and a flood of them would flood the log.
"""

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from api import audit
from api.deps import DoorAuth
from api.routers import PROBLEM_RESPONSES
from common.web.access import DoorRefusal, door_route, printable
from common.web.auth import Caller, bearer
from common.web.problems import Problem
from common.web.requestid import current_request_id

router = APIRouter(prefix="/door", tags=["door"])

# nginx's large header buffers are 8 KiB: no longer URI reaches us.
MAX_URI = 8192


@router.get(
    "/check",
    operation_id="door_check",
    status_code=204,
    response_class=Response,
    summary="May this request through the front door pass? (nginx's auth_request)",
    responses={
        204: {
            "description": "Allowed",
            "headers": {
                "X-Door-Caller": {"description": "Who: a key's or a person's name."},
                "X-Door-Role": {"description": "Their role (absent for an open route)."},
            },
        },
        401: PROBLEM_RESPONSES[401],
        403: PROBLEM_RESPONSES[403]
        | {"headers": {"X-Door-Reason": {"description": "Why, in one line."}}},
        429: PROBLEM_RESPONSES[429],
    },
)
async def door_check(
    request: Request,
    auth: DoorAuth,
    x_original_method: Annotated[
        str, Header(min_length=1, max_length=16, description="The request's method.")
    ],
    x_original_uri: Annotated[
        str,
        Header(
            min_length=1,
            max_length=MAX_URI,
            description="The request's URI as the client sent it (nginx's $request_uri).",
        ),
    ],
) -> Response:
    """The answer depends only on the original request: its method, URI and credentials
    (a bearer key). This route's own credentials are the original request's."""
    method = x_original_method.upper()
    try:
        route = door_route(method, x_original_uri)
    except DoorRefusal as refusal:
        await _audit(request, method, printable(x_original_uri.partition("?")[0]), None, 403)
        raise Problem(
            403, "forbidden", refusal.reason, headers={"X-Door-Reason": refusal.reason}
        ) from None
    if route.role is None:
        return Response(status_code=204, headers={"X-Door-Caller": "anonymous"})
    try:
        caller = await auth.identify(request, await bearer(request), required=True)
    except Problem as problem:
        if problem.status == 401:
            await _audit(request, method, route.route, route.target, 401)
        raise
    if caller.role < route.role:
        reason = (
            f"{printable(caller.name)} is a {caller.role.value}; "
            f"{method} {route.route} needs {route.role.value}"
        )
        await _audit(request, method, route.route, route.target, 403)
        raise Problem(403, "forbidden", reason, headers={"X-Door-Reason": reason})
    if route.audited:
        await _audit(request, method, route.route, route.target, 204)
    return Response(status_code=204, headers=_caller_headers(caller))


def _caller_headers(caller: Caller) -> dict[str, str]:
    return {"X-Door-Caller": printable(caller.name), "X-Door-Role": caller.role.value}


async def _audit(
    request: Request, method: str, route: str, target: str | None, outcome: int
) -> None:
    """Append the door's decision; the actor is whoever the credentials named (a revoked
    key's name too), else anonymous."""
    sink = getattr(request.app.state, "audit", None)
    if sink is None:
        return
    caller: Caller | None = getattr(request.state, "caller", None)
    entry = audit.Entry(
        actor=caller.name if caller else audit.ANONYMOUS,
        role=caller.role.value if caller else None,
        method=method,
        route=route,
        target=target,
        request_id=current_request_id(),
        outcome=outcome,
    )
    await audit.append(sink, entry)
