"""/login, /logout, /users and /sessions in-process (api.routers.login, api.routers.users):
a login sets a session cookie with the right flags and sends the browser on (only to a path
of this site), a wrong one is a 401 (the form again for a browser), failures are limited
per name and per address, the cookie works as a key does (in the API, through the door, in
serving), and an admin's changes end sessions. No password is in a response or the audit
log."""

import re
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api import people
from common.web.auth import REVOCATION_SECONDS, SESSION_COOKIE
from testkit.apps import AUTH, FakeDatabase, FakePrefect, FakeRegistry, api_app, serving_app

PASSWORD = "correct horse battery staple"
FORM = {"content-type": "application/x-www-form-urlencoded"}
HTML = {"accept": "text/html,application/xhtml+xml"}


@pytest.fixture
def database() -> FakeDatabase:
    database = FakeDatabase()
    database.add_user("ana", "viewer", PASSWORD)
    database.add_user("olu", "operator", PASSWORD)
    return database


@pytest.fixture
def client(database: FakeDatabase) -> TestClient:
    return TestClient(api_app(FakePrefect(), database), follow_redirects=False)


def log_in(
    client: TestClient, name: str = "ana", password: str = PASSWORD, **fields: str
) -> httpx.Response:
    return client.post("/login", data={"username": name, "password": password} | fields)


def test_the_form_is_a_page_of_its_own(client: TestClient) -> None:
    page = client.get("/login", params={"next": "/mlflow/#/models"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="next" value="/mlflow/#/models"' in page.text
    assert not re.search(r"(src|href)=", page.text)  # nothing loaded from anywhere
    assert "default-src 'none'" in page.headers["content-security-policy"]
    evil = client.get("/login", params={"next": '"><script>alert(1)</script>'})
    assert "<script>" not in evil.text and 'value="/prefect/"' in evil.text


def test_a_login_sets_a_strict_cookie_and_sends_the_browser_on(
    client: TestClient, database: FakeDatabase
) -> None:
    answer = log_in(client, next="/mlflow/")
    assert answer.status_code == 303 and answer.headers["location"] == "/mlflow/"
    cookie = answer.headers["set-cookie"]
    token = re.match(rf"{SESSION_COOKIE}=([^;]+);", cookie)
    assert token and len(token[1]) >= 43
    for flag in ("HttpOnly", "Max-Age=28800", "Path=/", "SameSite=strict"):
        assert flag.lower() in cookie.lower(), flag
    assert "secure" not in cookie.lower()  # plain http here
    behind_door = client.post(
        "/login",
        data={"username": "ana", "password": PASSWORD},
        headers={"X-Forwarded-Proto": "https"},
    )
    assert "; secure" in behind_door.headers["set-cookie"].lower()
    (session, _) = database.sessions.values()
    assert session.user == "ana" and PASSWORD not in str(database.sessions)


def test_json_logins_too(client: TestClient) -> None:
    answer = client.post("/login", json={"username": "ana", "password": PASSWORD})
    assert answer.status_code == 303 and answer.headers["location"] == "/prefect/"
    wrong = client.post("/login", json={"username": "ana", "password": "nope"})
    assert wrong.status_code == 401 and wrong.json()["type"] == "/problems/unauthorized"
    assert (
        client.post("/login", content=b"x", headers={"content-type": "text/plain"}).status_code
        == 422
    )


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\\/evil.example",
        "javascript:alert(1)",
        "prefect/",
        "/pre\nfect/",
        "",
    ],
)
def test_next_stays_on_this_site(client: TestClient, target: str) -> None:
    assert log_in(client, next=target).headers["location"] == "/prefect/"


@given(st.text(max_size=40))
def test_next_is_a_path_of_this_site_or_the_default(target: str) -> None:
    chosen = people.safe_next(target)
    assert chosen == people.DEFAULT_NEXT or (
        chosen == target
        and chosen.startswith("/")
        and not chosen.startswith("//")
        and "\\" not in chosen
        and all(ord(c) > 0x20 and ord(c) != 0x7F for c in chosen)
    )


def test_a_wrong_login_is_a_401_and_the_form_again_for_a_browser(client: TestClient) -> None:
    for name, password in (("ana", "wrong password!"), ("nobody", PASSWORD)):
        answer = client.post("/login", data={"username": name, "password": password}, headers=HTML)
        assert answer.status_code == 401 and "wrong user name or password" in answer.text
        assert answer.headers["content-type"].startswith("text/html")
        assert SESSION_COOKIE not in answer.headers.get("set-cookie", "")
        assert password not in answer.text
    problem = log_in(client, password="wrong password!")
    assert problem.headers["content-type"] == "application/problem+json"


def test_a_disabled_user_cannot_log_in(client: TestClient, database: FakeDatabase) -> None:
    user = database.user_by_name("ana")
    assert user is not None
    database.disable_user(user.id)
    assert log_in(client).status_code == 401


def test_failures_are_limited_per_name_and_per_address(database: FakeDatabase) -> None:
    client = TestClient(
        api_app(FakePrefect(), database, login_max_failures=3), follow_redirects=False
    )
    for _ in range(3):
        assert log_in(client, password="wrong password!").status_code == 401
    limited = log_in(client)  # even the right password waits
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another name from another address may try; the same name from anywhere may not.
    elsewhere = {"X-Forwarded-For": "10.0.0.9"}
    assert (
        client.post(
            "/login", data={"username": "olu", "password": PASSWORD}, headers=elsewhere
        ).status_code
        == 303
    )
    assert (
        client.post(
            "/login", data={"username": "ana", "password": PASSWORD}, headers=elsewhere
        ).status_code
        == 429
    )
    # The address that failed is limited for other names too.
    assert log_in(client, name="olu").status_code == 429


def test_successes_do_not_count() -> None:
    clock = [0.0]
    limiter = people.LoginLimiter(2, 300, clock=lambda: clock[0])
    limiter.failed("name:a")
    assert limiter.retry_after("name:a") == 0
    limiter.failed("name:a")
    assert limiter.retry_after("name:a", "address:x") == 300
    clock[0] = 299.5
    assert limiter.retry_after("name:a") == 1
    clock[0] = 300.0
    assert limiter.retry_after("name:a") == 0


def test_a_wrong_name_and_a_wrong_password_take_the_same_work() -> None:
    """Both verify one argon2 hash: timed over a few tries, neither is a fraction of the
    other (the dummy hash has the same parameters)."""
    stored = people.hash_password(PASSWORD)

    def spent(stored: str | None) -> float:
        started = time.perf_counter()
        for _ in range(3):
            assert not people.verify_password(stored, "wrong password!")
        return time.perf_counter() - started

    missing, wrong = spent(None), spent(stored)
    assert 0.5 < missing / wrong < 2.0, (missing, wrong)


def test_the_cookie_is_a_credential_like_a_key(client: TestClient, database: FakeDatabase) -> None:
    assert log_in(client, name="olu").status_code == 303  # the client keeps the cookie
    assert client.get("/flows").status_code == 200
    assert client.get("/keys").status_code == 403  # an operator
    door = client.get(
        "/door/check",
        headers={"X-Original-Method": "POST", "X-Original-URI": "/prefect/api/flow_runs/filter"},
    )
    assert door.status_code == 204 and door.headers["x-door-caller"] == "user:olu"
    assert door.headers["x-door-role"] == "operator"
    # A bad key with a good cookie: the key decides.
    assert client.get("/flows", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_serving_takes_the_cookie_too(database: FakeDatabase) -> None:
    app, _ = serving_app(FakeRegistry(), database)
    serving = TestClient(app)
    _, token = database.create_session(database.user_by_name("ana").id, 60)  # type: ignore[union-attr]
    serving.cookies.set(SESSION_COOKIE, token)
    assert serving.get("/models").status_code == 200
    assert serving.post("/predict", json={"trips": []}).status_code == 403  # a viewer


def test_logout_ends_the_session_and_clears_the_cookie(
    client: TestClient, database: FakeDatabase
) -> None:
    log_in(client)
    token = client.cookies[SESSION_COOKIE]
    out = client.post("/logout")
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert (
        'stack_session="";' in out.headers["set-cookie"] or "Max-Age=0" in out.headers["set-cookie"]
    )
    client.cookies.set(SESSION_COOKIE, token)  # a copy kept elsewhere is refused now
    refused = client.get("/flows")
    assert refused.status_code == 401 and "log in again" in refused.json()["detail"]
    assert client.post("/logout").status_code == 303  # again: nothing to end


def test_an_admin_manages_people_and_sessions(client: TestClient, database: FakeDatabase) -> None:
    made = client.post(
        "/users", json={"name": "kim", "role": "viewer", "password": PASSWORD}, headers=AUTH
    )
    assert made.status_code == 201 and made.json()["role"] == "viewer"
    assert PASSWORD not in made.text and "password" not in made.json()
    kim = made.json()["id"]
    taken = client.post(
        "/users", json={"name": "kim", "role": "viewer", "password": PASSWORD}, headers=AUTH
    )
    assert taken.status_code == 409 and taken.json()["type"] == "/problems/user-name-taken"
    short = client.post(
        "/users", json={"name": "lee", "role": "viewer", "password": "short"}, headers=AUTH
    )
    assert short.status_code == 422 and "short" not in short.text
    listed = client.get("/users", headers=AUTH).json()["users"]
    assert [u["name"] for u in listed] == ["ana", "olu", "kim"]

    assert log_in(client, name="kim").status_code == 303
    assert client.get("/flows").status_code == 200
    sessions = client.get("/sessions", headers=AUTH).json()["sessions"]
    assert [s["user"] for s in sessions] == ["kim"]
    promoted = client.patch(f"/users/{kim}", json={"role": "operator"}, headers=AUTH)
    assert promoted.json()["role"] == "operator"
    assert client.get("/flows").status_code == 200  # a role change keeps the session
    assert client.patch(f"/users/{kim}", json={}, headers=AUTH).status_code == 422

    ended = client.delete(f"/sessions/{sessions[0]['id']}", headers=AUTH)
    assert ended.status_code == 200 and ended.json()["revoked_at"] is not None
    assert client.get("/flows").status_code == 401  # this replica forgot its copy at once

    assert log_in(client, name="kim").status_code == 303
    new_password = client.patch(
        f"/users/{kim}", json={"password": "another long password"}, headers=AUTH
    )
    assert new_password.status_code == 200
    assert client.get("/flows").status_code == 401  # a new password ends sessions
    assert log_in(client, name="kim").status_code == 401
    assert log_in(client, name="kim", password="another long password").status_code == 303

    disabled = client.delete(f"/users/{kim}", headers=AUTH)
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    assert client.get("/flows").status_code == 401
    assert log_in(client, name="kim", password="another long password").status_code == 401
    assert client.get("/sessions", headers=AUTH).json()["sessions"] == []
    # Disabling is final: no role or password brings a disabled person back.
    for change in ({"role": "admin"}, {"password": "a third long password"}):
        refused = client.patch(f"/users/{kim}", json=change, headers=AUTH)
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"] == "/problems/user-disabled"
    assert log_in(client, name="kim", password="a third long password").status_code == 401
    missing = "00000000-0000-0000-0000-000000000000"
    assert (
        client.patch(f"/users/{missing}", json={"role": "admin"}, headers=AUTH).status_code == 404
    )
    assert client.delete(f"/users/{missing}", headers=AUTH).status_code == 404


def test_a_viewer_cannot_manage_people(client: TestClient) -> None:
    log_in(client)
    assert client.get("/users").status_code == 403
    assert (
        client.post("/users", json={"name": "x", "role": "admin", "password": PASSWORD}).status_code
        == 403
    )


def test_logins_and_changes_are_audited_without_passwords(
    client: TestClient, database: FakeDatabase
) -> None:
    log_in(client, password="wrong password!")
    log_in(client)
    client.post(
        "/users", json={"name": "kim", "role": "viewer", "password": PASSWORD}, headers=AUTH
    )
    client.post("/logout")
    rows = [(r.actor, r.method, r.route, r.outcome) for r in database.audit]
    assert rows == [
        ("anonymous", "POST", "/login", 401),
        ("user:ana", "POST", "/login", 303),
        ("ci", "POST", "/users", 201),
        ("user:ana", "POST", "/logout", 303),
    ]
    assert database.audit[0].target == "ana"
    assert PASSWORD not in repr(database.audit)


def test_a_revoked_session_is_refused_by_another_instance_within_a_second(
    database: FakeDatabase,
) -> None:
    first = TestClient(api_app(FakePrefect(), database), follow_redirects=False)
    second = TestClient(api_app(FakePrefect(), database), follow_redirects=False)
    log_in(first)
    token = first.cookies[SESSION_COOKIE]
    second.cookies.set(SESSION_COOKIE, token)
    assert second.get("/flows").status_code == 200  # found at once, made elsewhere
    first.post("/logout")
    ended = time.monotonic()
    while second.get("/flows").status_code == 200:
        time.sleep(0.02)
    assert time.monotonic() - ended < REVOCATION_SECONDS


@pytest.mark.parametrize(
    "headers",
    [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"origin": "https://127.0.0.1:8443", "x-forwarded-proto": "http"},
        # The browser's own word wins over an Origin that happens to match.
        {"sec-fetch-site": "cross-site", "origin": "http://testserver"},
    ],
)
def test_a_login_or_logout_from_another_site_s_page_is_refused(
    client: TestClient, database: FakeDatabase, headers: dict[str, str]
) -> None:
    """Login CSRF: a form on another site must not log the visitor in as its author (their
    runs then go into the attacker's account), nor log them out."""
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "127.0.0.1:8443"}
    sent = forwarded | headers
    answer = client.post("/login", data={"username": "ana", "password": PASSWORD}, headers=sent)
    assert answer.status_code == 403 and answer.json()["type"] == "/problems/cross-site"
    assert "set-cookie" not in answer.headers
    page = client.post(
        "/login", data={"username": "ana", "password": PASSWORD}, headers=sent | HTML
    )
    assert page.status_code == 403 and "another site" in page.text
    assert client.post("/logout", headers=sent).status_code == 403


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, a script: no browser
        {"sec-fetch-site": "same-origin"},
        {"sec-fetch-site": "none"},  # typed in the address bar
        {"origin": "https://127.0.0.1:8443"},  # through the door
        {"origin": "HTTPS://127.0.0.1:8443"},
    ],
)
def test_a_login_from_this_site_or_no_browser_passes(
    client: TestClient, headers: dict[str, str]
) -> None:
    forwarded = {"x-forwarded-proto": "https", "x-forwarded-host": "127.0.0.1:8443"}
    answer = client.post(
        "/login", data={"username": "ana", "password": PASSWORD}, headers=forwarded | headers
    )
    assert answer.status_code == 303, answer.text
    assert client.post("/logout", headers=forwarded | headers).status_code == 303


def test_a_login_to_this_server_directly_knows_its_own_origin(client: TestClient) -> None:
    """make dev: no door, the browser's origin is this server's (Host)."""
    direct = client.post(
        "/login",
        data={"username": "ana", "password": PASSWORD},
        headers={"origin": "http://testserver"},
    )
    assert direct.status_code == 303
