"""/login and /logout: people's sessions. A login with a right name and password sets the
`stack_session` cookie (a random token; only its SHA-256 is stored) and sends the browser
on (303); a wrong one answers 401, with the form again for a browser. Failed logins are
limited per user name and per client address (api.people.LoginLimiter; 429). Every
attempt is in the audit log (the route's POST): a success as the person, a failure as
`anonymous` with the name tried as its target. Passwords are in no response, log line or
audit entry.
"""

import html
import json
import re
from typing import Annotated, Any
from urllib.parse import parse_qsl

import anyio
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from api import people
from api.deps import DatabaseDep, LoginLimiterDep, SettingsDep
from api.routers import PROBLEM_RESPONSES
from api.schemas import USER_NAME
from common.web.auth import SESSION_COOKIE, USER_PREFIX, Auth, Caller, Role
from common.web.db import blocking
from common.web.problems import Problem, invalid

router = APIRouter(tags=["login"])

FORM = "application/x-www-form-urlencoded"
# The page loads nothing: its style is inline, and it may post only to this site.
PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
)
LOGIN_BODY = {
    "required": True,
    "content": {
        media: {
            "schema": {
                "type": "object",
                "required": ["username", "password"],
                "properties": {
                    "username": {"type": "string", "minLength": 1, "maxLength": 100},
                    "password": {"type": "string", "minLength": 1, "maxLength": 1024},
                    "next": {
                        "type": "string",
                        "description": "A path on this site to go to (default /prefect/).",
                    },
                },
            }
        }
        for media in (FORM, "application/json")
    },
}


def _or_html(problem: dict[str, Any], description: str) -> dict[str, Any]:
    """A problem, or the form again (text/html) for a client that accepts HTML."""
    return problem | {"description": f"{description}: the form again for a browser"}


@router.get(
    "/login",
    operation_id="login_page",
    response_class=HTMLResponse,
    summary="The login form",
    responses={200: {"content": {"text/html": {}}, "description": "The form"}},
)
async def login_page(
    target: Annotated[
        str | None,
        Query(alias="next", max_length=2048, description="Where to go after logging in."),
    ] = None,
) -> HTMLResponse:
    return page(people.safe_next(target))


@router.post(
    "/login",
    operation_id="login",
    status_code=303,
    response_class=Response,
    summary="Log in: the session cookie, and on to `next`",
    openapi_extra={"requestBody": LOGIN_BODY},
    responses={
        303: {
            "description": "Logged in: `Set-Cookie: stack_session=...`, `Location: <next>`",
            "headers": {"Set-Cookie": {"description": "The session cookie (HttpOnly)."}},
        },
        401: _or_html(PROBLEM_RESPONSES[401], "Wrong name or password"),
        403: _or_html(PROBLEM_RESPONSES[403], "Sent from another site's page"),
        422: PROBLEM_RESPONSES[422],
        429: _or_html(PROBLEM_RESPONSES[429], "Too many failed logins (see Retry-After)"),
    },
)
async def login(
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
    auth: Auth,
) -> Response:
    fields = await _fields(request)
    # A browser (it accepts HTML) gets the form again with the error; others a problem.
    browser = "text/html" in request.headers.get("accept", "")
    name, password = fields.get("username", ""), fields.get("password", "")
    target = people.safe_next(fields.get("next"))
    if from_another_site(request):
        if browser:
            return page(target, error=CROSS_SITE, status=403)
        raise Problem(403, "cross-site", CROSS_SITE)
    _check_fields(name, password)
    request.state.audit_target = name
    subjects = (f"name:{name}", f"address:{client_address(request)}")
    wait = limiter.retry_after(*subjects)
    if wait:
        detail = f"too many failed logins; retry in {wait} s"
        headers = {"Retry-After": str(wait)}
        if browser:
            return page(target, error=detail, status=429, headers=headers)
        raise Problem(429, "rate-limited", detail, headers=headers)
    found = await blocking(database.login_hash, name)
    stored = found[1] if found else None
    # Off the event loop: argon2 takes tens of milliseconds of CPU, the same with no user.
    if not await anyio.to_thread.run_sync(people.verify_password, stored, password):
        limiter.failed(*subjects)
        detail = "wrong user name or password"
        if browser:
            return page(target, error=detail, status=401)
        raise Problem(401, "unauthorized", detail)
    assert found is not None
    user = found[0]
    session, token = await blocking(database.create_session, user.id, settings.session_ttl_seconds)
    if auth.sessions is not None:
        auth.sessions.forget()
    request.state.caller = Caller(USER_PREFIX + user.name, Role(user.role))
    request.state.audit_target = str(session.id)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.session_ttl_seconds,
        path="/",
        httponly=True,
        samesite="strict",
        secure=over_https(request),
    )
    return response


@router.post(
    "/logout",
    operation_id="logout",
    status_code=303,
    response_class=Response,
    summary="Log out: the session ends, the cookie is cleared",
    responses={
        303: {"description": "Logged out; `Location: /login`"},
        403: PROBLEM_RESPONSES[403] | {"description": "Sent from another site's page"},
    },
)
async def logout(request: Request, database: DatabaseDep, auth: Auth) -> Response:
    """Idempotent: without a session (or with an ended one) it only clears the cookie."""
    if from_another_site(request):
        raise Problem(403, "cross-site", CROSS_SITE)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        session = await blocking(database.end_session, token)
        if session is not None:
            if auth.sessions is not None:
                auth.sessions.forget()
            request.state.caller = Caller(USER_PREFIX + session.user, Role.viewer)
            request.state.audit_target = str(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(
        SESSION_COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=over_https(request),
    )
    return response


async def _fields(request: Request) -> dict[str, str]:
    """The login's fields, from a form or a JSON object."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type == FORM:
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise invalid("body", "the form is not UTF-8") from None
        return dict(pairs)
    if content_type == "application/json":
        try:
            data: Any = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise invalid("body", "the body is not a JSON object") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, str) for k, v in data.items() if k in ("username", "password", "next")
        ):
            raise invalid("body", "username, password and next are strings in a JSON object")
        return {k: v for k, v in data.items() if isinstance(v, str)}
    raise invalid(
        "header.content-type", f"send a form ({FORM}) or JSON (got {content_type or 'none'})"
    )


def _check_fields(name: str, password: str) -> None:
    if not 1 <= len(name) <= 100 or not re.match(USER_NAME, name):
        raise invalid("body.username", "1 to 100 letters, digits or . _ @ -")
    if not 1 <= len(password) <= people.MAX_PASSWORD:
        raise invalid("body.password", f"1 to {people.MAX_PASSWORD} characters")


def client_address(request: Request) -> str:
    """The client's address: the last hop of X-Forwarded-For (the one the door added), else
    the peer's. (Only the door reaches the API from outside; a client that reaches it
    directly can choose this, and is still limited per user name.)"""
    forwarded = request.headers.get("x-forwarded-for", "")
    hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
    if hops:
        return hops[-1][:100]
    return request.client.host if request.client else "unknown"


CROSS_SITE = "a login or logout sent from another site's page is refused: use this site's form"


def from_another_site(request: Request) -> bool:
    """A browser sent this from another site's page: a form there that logs the visitor in
    as someone else (login CSRF), or out. Browsers say where a request comes from in
    `Sec-Fetch-Site`, and older ones in `Origin` on every POST; a client that sends neither
    (curl, a script) is no browser, and passes. Our own origin is the one the browser sees:
    the door's (`X-Forwarded-Proto`, `X-Forwarded-Host`), else this server's."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    scheme = "https" if over_https(request) else "http"
    return origin.lower() != f"{scheme}://{host}".lower()


def over_https(request: Request) -> bool:
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return proto == "https" or request.url.scheme == "https"


def page(
    target: str,
    *,
    error: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The login form (no scripts, nothing from elsewhere); `error` above it."""
    message = f'<p class="error" role="alert">{html.escape(error)}</p>' if error else ""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · training stack</title>
<style>
body {{ font: 16px system-ui, sans-serif; background: #f4f5f7; margin: 0; }}
main {{ max-width: 22rem; margin: 12vh auto; background: #fff; padding: 2rem;
        border-radius: 8px; box-shadow: 0 1px 4px rgba(0,0,0,.12); }}
h1 {{ font-size: 1.3rem; margin-top: 0; }}
label {{ display: block; margin: 1rem 0 .3rem; }}
input {{ width: 100%; box-sizing: border-box; padding: .5rem; font-size: 1rem; }}
button {{ margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; }}
.error {{ color: #b00020; }}
</style></head>
<body><main>
<h1>Training stack</h1>
{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{html.escape(target, quote=True)}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>
</main></body></html>
"""
    policy = {"Content-Security-Policy": PAGE_POLICY, "Cache-Control": "no-store"}
    return HTMLResponse(body, status_code=status, headers=policy | (headers or {}))
