"""Which role each route needs: one table for the API and serving, read by the route guard
of each service and by the tests (every route of both OpenAPI documents is in it).

`None`: open to anyone (health and metrics). A read that needs `viewer` needs no key at all
when API_READS_REQUIRE_KEY=false. A route missing from the table is refused (403): a new
route has to be placed here before anyone can call it.
"""

import functools
from collections.abc import Awaitable, Callable

from fastapi import Request

from common.web.auth import Auth, Caller, Credentials, Role
from common.web.problems import Problem

Route = tuple[str, str]  # method, path template

ROUTES: dict[str, dict[Route, Role | None]] = {
    "api": {
        ("GET", "/runs"): Role.viewer,
        ("GET", "/runs/{run_id}"): Role.viewer,
        ("GET", "/runs/{run_id}/logs"): Role.viewer,
        ("GET", "/flows"): Role.viewer,
        ("POST", "/runs"): Role.operator,
        ("POST", "/runs/{run_id}/cancel"): Role.operator,
        ("POST", "/keys"): Role.admin,
        ("GET", "/keys"): Role.admin,
        ("POST", "/keys/{key_id}/rotate"): Role.admin,
        ("DELETE", "/keys/{key_id}"): Role.admin,
        ("GET", "/audit"): Role.admin,
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/metrics"): None,
    },
    "serving": {
        ("GET", "/models"): Role.viewer,
        ("POST", "/predict"): Role.operator,
        ("GET", "/healthz"): None,
        ("GET", "/readyz"): None,
        ("GET", "/metrics"): None,
    },
}


def needed(service: str, method: str, path: str) -> Role:
    """The role a guarded route needs; a route not in the table needs more than anyone has."""
    role = ROUTES[service].get((method, path))
    if role is None:
        raise Problem(403, "forbidden", f"{method} {path} is not in the role table")
    return role


@functools.cache  # one dependency per service: tests override it by `guard(service)`
def guard(service: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the caller of a request to one of `service`'s routes, if their role is
    enough for it (401 without a valid key, 403 with too small a role)."""

    async def allowed(request: Request, credentials: Credentials, auth: Auth) -> Caller:
        path = getattr(request.scope.get("route"), "path", request.url.path)
        role = needed(service, request.method, path)
        open_read = role is Role.viewer and not auth.reads_require_key
        caller = await auth.identify(request, credentials, required=not open_read)
        if caller.role < role:
            raise Problem(
                403,
                "forbidden",
                f"{caller.name} is a {caller.role.value}; "
                f"{request.method} {path} needs {role.value}",
            )
        return caller

    return allowed
