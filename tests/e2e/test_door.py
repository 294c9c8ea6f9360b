"""The front door in the Compose stack: the one published port, TLS, and every request but
health asked of the API (`/door/check`) before it reaches Prefect, MLflow, our API or serving.

Keys of each role are made through the door (`POST /api/keys`, with the stack's admin key);
every write through the door is then in the audit log, refused or allowed. A person logs in
at the door's /login, and the session cookie opens both UIs (headless Chromium too)."""

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from e2e.conftest import (
    API,
    ARTIFACTS,
    DOOR,
    DOOR_NAME,
    MLFLOW,
    PREFECT,
    PREFECT_UI,
    PROJECT,
    REPO,
    SERVING,
    Compose,
    _read_env,
    figure,
)
from e2e.test_compose import browser_page, rendered

pytestmark = pytest.mark.e2e
PROBLEM = "application/problem+json"
OPEN = [
    f"{DOOR}/healthz",
    f"{API}/healthz",
    f"{SERVING}/healthz",
    f"{PREFECT}/health",
    f"{MLFLOW}/health",
]
# Readiness is open too; it may say 503 (serving before it has a champion to serve).
READY = [f"{API}/readyz", f"{SERVING}/readyz"]
ALIAS = f"{MLFLOW}/api/2.0/mlflow/registered-models/alias"


class Key:
    """A new key of `role`, made through the door with the stack's admin key."""

    def __init__(self, compose: Compose, role: str) -> None:
        self.name = f"door-{role}-{uuid.uuid4().hex[:8]}"
        body = {"name": self.name, "role": role, "owner": "e2e", "expires_in_days": 1}
        made = compose.http.post(f"{API}/keys", json=body)
        assert made.status_code == 201, made.text
        self.headers = {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.fixture(scope="module")
def viewer(compose: Compose) -> Key:
    return Key(compose, "viewer")


@pytest.fixture(scope="module")
def operator(compose: Compose) -> Key:
    return Key(compose, "operator")


@pytest.fixture(scope="module")
def writes() -> dict[str, dict[str, str]]:
    """The request ids of the writes the tests send, refused and allowed, by where they went:
    the audit test looks for them."""
    return {"refused": {}, "allowed": {}}


@pytest.fixture(scope="module")
def anonymous(compose: Compose) -> Iterator[httpx.Client]:
    with compose.client() as client:
        yield client


def _request_id() -> str:
    return f"door-e2e-{uuid.uuid4().hex}"


def _deployment_id(compose: Compose, flow: str = "probe") -> str:
    return compose.prefect().deployment(flow)["id"]


def _wait_completed(compose: Compose, run_id: str, headers: dict[str, str]) -> dict:
    """The run's final state through the door, within 180 s; it must be COMPLETED."""
    deadline = time.monotonic() + 180
    while (state := compose.http.get(f"{API}/runs/{run_id}", headers=headers).json()["state"])[
        "type"
    ] not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
        assert time.monotonic() < deadline, state
        time.sleep(0.5)
    assert state["type"] == "COMPLETED", state
    return state


def test_only_the_door_is_published_and_nothing_else_answers_on_loopback(
    compose: Compose,
) -> None:
    published = {
        (c["Service"], p["PublishedPort"], p["URL"])
        for c in compose.containers()
        for p in c.get("Publishers") or []
        if p.get("PublishedPort")
    }
    assert published == {("gateway", 8443, "127.0.0.1")}
    for port in (4200, 5000, 8000, 8001):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=3).close()


def test_tls_only_1_2_and_up_with_the_generated_certificate(compose: Compose) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(compose.certificate)
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", 8443), timeout=5) as raw,
    ):
        old.wrap_socket(raw, server_hostname="127.0.0.1")
    with (
        socket.create_connection(("127.0.0.1", 8443), timeout=5) as raw,
        compose.tls.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
    # A client that does not trust it refuses it: the certificate is the one made for the run.
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{DOOR}/healthz", timeout=5)


def test_health_is_open_without_credentials(anonymous: httpx.Client) -> None:
    statuses = {url: anonymous.get(url).status_code for url in OPEN}
    assert statuses == {url: 200 for url in OPEN}
    for url in READY:
        response = anonymous.get(url)
        # The service's own answer, not the door's refusal.
        assert response.status_code in (200, 503), (url, response.text)
        assert not response.json().get("type", "").endswith(("unauthorized", "forbidden"))


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", f"{PREFECT}/flow_runs/filter"),
        ("GET", f"{MLFLOW}/api/2.0/mlflow/registered-models/search"),
        ("GET", f"{API}/runs"),
        ("POST", f"{SERVING}/predict"),
    ],
)
def test_no_credentials_is_a_401_problem(anonymous: httpx.Client, method: str, url: str) -> None:
    response = anonymous.request(method, url, json={})
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")
    problem = response.json()
    assert problem["status"] == 401 and problem["request_id"] == response.headers["x-request-id"]


def test_a_wrong_key_is_a_401_too(anonymous: httpx.Client) -> None:
    wrong = {"Authorization": "Bearer not-a-key-of-this-stack"}
    response = anonymous.post(f"{PREFECT}/flow_runs/filter", json={}, headers=wrong)
    assert response.status_code == 401 and response.headers["content-type"] == PROBLEM


def test_a_browser_without_a_session_is_sent_to_the_login_page(anonymous: httpx.Client) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    for path in ("/prefect/runs", "/mlflow/"):
        response = anonymous.get(f"{DOOR}{path}", headers=html)
        assert response.status_code == 302, response.text
        assert response.headers["location"] == f"/login?next={path}"
    assert anonymous.get(f"{DOOR}/").headers["location"] == "/prefect/"


def test_the_authority_is_not_reachable_through_the_door(
    compose: Compose, anonymous: httpx.Client
) -> None:
    for client in (anonymous, compose.http):
        response = client.get(f"{API}/door/check")
        assert response.status_code == 404 and response.headers["content-type"] == PROBLEM


def test_a_viewer_reads_prefect_and_mlflow_but_cannot_write(
    compose: Compose, viewer: Key, writes: dict[str, dict[str, str]]
) -> None:
    http = compose.http
    runs = http.post(f"{PREFECT}/flow_runs/filter", json={"limit": 5}, headers=viewer.headers)
    assert runs.status_code == 200 and isinstance(runs.json(), list), runs.text
    models = http.get(f"{MLFLOW}/api/2.0/mlflow/registered-models/search", headers=viewer.headers)
    assert models.status_code == 200, models.text
    experiments = http.post(
        f"{MLFLOW}/api/2.0/mlflow/experiments/search",
        json={"max_results": 5},
        headers=viewer.headers,
    )
    assert experiments.status_code == 200, experiments.text
    assert http.get(f"{API}/runs", headers=viewer.headers).status_code == 200
    # The server's settings, which the Prefect UI reads for its menu: no secret of .env in them.
    settings = http.get(f"{PREFECT}/admin/settings", headers=viewer.headers)
    assert settings.status_code == 200, settings.text
    for name, value in _read_env(compose.env_file).items():
        if name.endswith(("PASSWORD", "KEY")) and len(value) >= 8:
            assert value not in settings.text, name

    deployment = _deployment_id(compose)
    refused = {
        "prefect": http.post(
            f"{PREFECT}/deployments/{deployment}/create_flow_run",
            json={"parameters": {"seconds": 0}},
            headers=viewer.headers | {"X-Request-ID": _request_id()},
        ),
        "mlflow": http.post(
            ALIAS,
            json={"name": "trip-duration-fhv", "alias": "door-e2e", "version": "1"},
            headers=viewer.headers | {"X-Request-ID": _request_id()},
        ),
        "api": http.post(
            f"{API}/runs",
            json={"flow": "probe", "parameters": {"seconds": 0}},
            headers=viewer.headers | {"X-Request-ID": _request_id()},
        ),
    }
    for where, response in refused.items():
        assert response.status_code == 403, (where, response.text)
        assert response.headers["content-type"] == PROBLEM, where
        assert response.json()["detail"], where
        writes["refused"][where] = response.request.headers["x-request-id"]


def test_an_operator_triggers_through_the_api_and_steers_prefect_runs(
    compose: Compose, operator: Key, writes: dict[str, dict[str, str]]
) -> None:
    """The operator's trigger (POST /api/runs) runs to completion. Creating a flow run from a
    deployment in Prefect's own API is an admin's (its body may replace the agent's
    command): the stack's admin key creates one, scheduled far ahead, and the operator
    cancels it, as the Prefect UI's Cancel button does."""
    http = compose.http
    started = time.monotonic()
    trigger_id = _request_id()
    run = http.post(
        f"{API}/runs",
        json={"flow": "probe", "parameters": {"seconds": 0}},
        headers=operator.headers | {"X-Request-ID": trigger_id},
    )
    assert run.status_code == 202, run.text
    _wait_completed(compose, run.json()["id"], operator.headers)
    elapsed = time.monotonic() - started
    figure(f"door: an operator's trigger through /api/runs completed in {elapsed:.1f} s")

    admin_id = _request_id()
    scheduled = {"type": "SCHEDULED", "state_details": {"scheduled_time": "2099-01-01T00:00:00Z"}}
    created = http.post(
        f"{PREFECT}/deployments/{_deployment_id(compose)}/create_flow_run",
        json={"parameters": {"seconds": 0}, "state": scheduled},
        headers={"X-Request-ID": admin_id},
    )
    assert created.status_code == 201, created.text
    assert created.headers["x-request-id"] == admin_id
    cancel_id = _request_id()
    cancelled = http.post(
        f"{PREFECT}/flow_runs/{created.json()['id']}/set_state",
        json={"state": {"type": "CANCELLED"}, "force": True},
        headers=operator.headers | {"X-Request-ID": cancel_id},
    )
    assert cancelled.status_code in (200, 201) and cancelled.json()["status"] == "ACCEPT"
    assert compose.prefect().flow_run(created.json()["id"])["state"]["type"] == "CANCELLED"
    writes["allowed"].update(api=trigger_id, prefect_admin=admin_id, prefect=cancel_id)


def _audit(compose: Compose, request_ids: set[str]) -> dict[str, dict]:
    """The audit entries of these request ids (the newest pages first, until all found)."""
    found: dict[str, dict] = {}
    url: str | None = f"{API}/audit?limit=200"
    for _ in range(20):
        if url is None or request_ids <= set(found):
            break
        page = compose.http.get(url)
        assert page.status_code == 200, page.text
        for entry in page.json()["entries"]:
            if entry["request_id"] in request_ids:
                found.setdefault(entry["request_id"], entry)
        following = page.json().get("next")
        url = following if not following or following.startswith("http") else f"{DOOR}{following}"
    return found


def test_the_audit_log_shows_the_refused_and_the_allowed_writes(
    compose: Compose, viewer: Key, operator: Key, writes: dict[str, dict[str, str]]
) -> None:
    refused, allowed = writes["refused"], writes["allowed"]
    assert len(refused) == 3 and len(allowed) == 3, f"runs after the writes' tests: {writes}"
    entries = _audit(compose, set(refused.values()) | set(allowed.values()))
    assert set(entries) == set(refused.values()) | set(allowed.values()), json.dumps(entries)
    for where, request_id in refused.items():
        entry = entries[request_id]
        assert entry["actor"] == viewer.name, entry
        # The door's decision: 403.
        assert entry["method"] == "POST" and entry["outcome"] == 403, (where, entry)
    for where, request_id in allowed.items():
        entry = entries[request_id]
        assert entry["actor"] == ("env" if where == "prefect_admin" else operator.name), entry
        # Prefect's: the door's decision (204, allowed); ours: the API's own answer.
        assert entry["outcome"] == {"prefect": 204, "prefect_admin": 204, "api": 202}[where], (
            where,
            entry,
        )


def test_prefect_websockets_pass_the_door_with_credentials(compose: Compose) -> None:
    """A stream needs the door's credentials on its upgrade, then Prefect's auth string in
    its first message (docs/gateway.md: the door does not see the messages; a stream without
    it is refused: test_prefect_requires_its_auth_string_inside_the_network). With the
    asyncio client, as Prefect's own: websockets' threaded client over TLS stalled its
    handshake now and then (2 of 60 connections, against 0 of 120 for this one)."""
    url = PREFECT.replace("https://", "wss://") + "/events/out"
    options = {"ssl": compose.tls, "subprotocols": ["prefect"], "open_timeout": 10}
    token = _read_env(compose.env_file)["PREFECT_API_AUTH_STRING"]

    async def stream() -> None:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, **options):
                pass
        assert refused.value.response.status_code == 401
        async with connect(url, additional_headers=compose.auth, **options) as socket_:
            await socket_.send(json.dumps({"type": "auth", "token": token}))
            answer = await asyncio.wait_for(socket_.recv(), 10)
            assert json.loads(answer) == {"type": "auth_success"}
            await socket_.send(json.dumps({"type": "filter", "filter": {}, "backfill": False}))
            # Still open: the stream waits for events (a refused filter would close it).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(socket_.recv(), 2)

    asyncio.run(stream())


def test_the_uis_and_docs_answer_under_their_prefixes(compose: Compose) -> None:
    http = compose.http
    html = {"Accept": "text/html"}
    prefect = http.get(f"{PREFECT_UI}/", headers=html, follow_redirects=True)
    assert prefect.status_code == 200 and "<html" in prefect.text.lower()
    assert prefect.url.path.startswith("/prefect/")
    # The UI calls its API through the door: its settings name the door's URL.
    settings = http.get(f"{PREFECT_UI}/ui-settings")
    assert settings.status_code == 200 and settings.json()["api_url"] == PREFECT
    mlflow = http.get(f"{MLFLOW}/", headers=html)
    assert mlflow.status_code == 200 and "static-files/" in mlflow.text
    # Its assets are relative: they load under /mlflow/ too.
    [script] = [p for p in mlflow.text.split('"') if p.startswith("static-files/static/js/")]
    assert http.get(f"{MLFLOW}/{script}").status_code == 200
    # Our API knows its public prefix: its docs page loads /api/openapi.json.
    script = (
        "import urllib.request; print(urllib.request.urlopen("
        "'http://127.0.0.1:8000/docs', timeout=5).read().decode())"
    )
    assert "/api/openapi.json" in compose.run("exec", "-T", "api", "python", "-c", script)


INSIDE_PREFECT = """
import base64, json, os, httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
url = "http://server:4200/api"
def basic(auth):
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}
def stream(token):
    with connect("ws://server:4200/api/events/out", subprotocols=["prefect"]) as socket:
        socket.send(json.dumps({"type": "auth", "token": token}))
        try:
            return json.loads(socket.recv(timeout=10))["type"]
        except ConnectionClosed as closed:
            return closed.rcvd.code
auth = os.environ["PREFECT_API_AUTH_STRING"]
print(json.dumps({
    "stream without": stream(None),
    "stream with": stream(auth),
    "none": httpx.post(f"{url}/flows/filter", json={}).status_code,
    "our key": httpx.post(f"{url}/flows/filter", json={},
                          headers={"Authorization": "Bearer " + os.environ["API_KEY"]}).status_code,
    "wrong": httpx.post(f"{url}/flows/filter", json={}, headers=basic("prefect:wrong")).status_code,
    "auth string": httpx.post(f"{url}/flows/filter", json={}, headers=basic(auth)).status_code,
    "health": httpx.get(f"{url}/health").status_code,
}))
"""


def test_prefect_requires_its_auth_string_inside_the_network(compose: Compose) -> None:
    """Defence in depth: from inside the stack's network (the API's container), Prefect's
    server refuses a request without its auth string, with ours, or with a wrong one, and a
    stream whose first message lacks it (policy violation, 1008); health stays open. Every
    other test reaching Prefect through the door shows the door sends it."""
    out = compose.run("exec", "-T", "api", "python", "-c", INSIDE_PREFECT)
    statuses = json.loads(out.strip().splitlines()[-1])
    assert statuses == {
        "stream without": 1008, "stream with": "auth_success",
        "none": 401, "our key": 401, "wrong": 401, "auth string": 200, "health": 200,
    }  # fmt: skip


def test_the_running_door_s_configuration_is_valid(compose: Compose) -> None:
    out = compose.run("exec", "-T", "gateway", "nginx", "-t")
    assert out == "" or "successful" in out
    logs = compose.run("logs", "--no-color", "gateway")
    lines = [json.loads(line.split("| ", 1)[1]) for line in logs.splitlines() if "| {" in line]
    assert lines and all(line["request_id"] for line in lines)


class Person:
    """A new person of `role`, made through the door with the stack's admin key."""

    def __init__(self, compose: Compose, role: str) -> None:
        self.name = f"door-{role}-{uuid.uuid4().hex[:8]}"
        self.password = f"pw-{uuid.uuid4().hex}"
        body = {"name": self.name, "role": role, "password": self.password}
        made = compose.http.post(f"{API}/users", json=body)
        assert made.status_code == 201, made.text


@pytest.fixture(scope="module")
def person(compose: Compose) -> Person:
    return Person(compose, "viewer")


def test_a_person_logs_in_and_the_session_opens_both_uis(compose: Compose, person: Person) -> None:
    html = {"Accept": "text/html"}
    with compose.client() as anonymous:
        form = anonymous.get(f"{DOOR}/login", params={"next": "/prefect/"}, headers=html)
        assert form.status_code == 200 and 'name="username"' in form.text
        fields = {"username": person.name, "password": person.password, "next": "/prefect/"}
        # Login CSRF: another site's form is refused; the door's own origin passes.
        elsewhere = anonymous.post(
            f"{DOOR}/login", data=fields, headers={"Origin": "https://evil.example"}
        )
        assert elsewhere.status_code == 403 and "set-cookie" not in elsewhere.headers
        assert elsewhere.json()["type"] == "/problems/cross-site"
        login = anonymous.post(f"{DOOR}/login", data=fields, headers=html | {"Origin": DOOR})
    assert login.status_code == 303 and login.headers["location"] == "/prefect/", login.text
    cookie = login.headers["set-cookie"]
    for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert attribute.lower() in cookie.lower(), cookie
    token = cookie.split(";", 1)[0].split("=", 1)[1]
    session = {"Cookie": f"stack_session={token}"}
    with compose.client(headers=session) as browser:
        prefect = browser.get(f"{PREFECT_UI}/", headers=html, follow_redirects=True)
        assert prefect.status_code == 200 and "<html" in prefect.text.lower()
        mlflow = browser.get(f"{MLFLOW}/", headers=html)
        assert mlflow.status_code == 200 and "static-files/" in mlflow.text
        runs = browser.post(f"{PREFECT}/flow_runs/filter", json={"limit": 1})
        assert runs.status_code == 200, runs.text
        assert browser.get(f"{API}/runs").status_code == 200
        # A viewer's session: reads, not writes.
        refused = browser.post(f"{API}/runs", json={"flow": "probe", "parameters": {}})
        assert refused.status_code == 403 and refused.headers["content-type"] == PROBLEM
        # Logged out: the session is refused at the door within a second.
        assert browser.post(f"{DOOR}/logout").status_code in (200, 204, 303)
        deadline = time.monotonic() + 2
        while (after := browser.get(f"{PREFECT_UI}/runs", headers=html)).status_code != 302:
            assert time.monotonic() < deadline, after.status_code
            time.sleep(0.1)
        assert after.headers["location"] == "/login?next=/prefect/runs"


def test_a_person_logs_in_with_a_browser_and_sees_both_uis(
    compose: Compose, person: Person
) -> None:
    """Headless Chromium, no key: the door sends it to the login page, then back to the
    Prefect UI, rendered through the door (screenshots under tests/e2e/artifacts/)."""
    ARTIFACTS.mkdir(exist_ok=True)
    shots = (
        ARTIFACTS / "door-login.png",
        ARTIFACTS / "door-prefect-ui.png",
        ARTIFACTS / "door-mlflow-ui.png",
    )
    with browser_page(compose, headers={}) as page:
        # What the door or a server refused while the viewer browsed: a viewer's UI must not
        # ask for anything a viewer may not read (Prefect's menu needs its settings).
        refused: list[tuple[int, str, str]] = []
        page.on(
            "response",
            lambda r: (
                refused.append((r.status, r.request.method, r.url)) if r.status >= 400 else None
            ),
        )
        page.goto(f"{PREFECT_UI}/runs")
        assert "/login?next=/prefect/runs" in page.url, page.url
        page.get_by_text("Log in").first.wait_for(timeout=10_000)
        page.screenshot(path=shots[0])
        page.fill("#username", person.name)
        page.fill("#password", person.password)
        page.click("button[type=submit]")
        page.wait_for_url(f"{PREFECT_UI}/**", timeout=30_000)
        text = rendered(page, f"{PREFECT_UI}/runs", "Completed")
        page.screenshot(path=shots[1])
        assert "Dashboard" in text, text[:2000]  # the menu, drawn once the settings are read
        assert [r for r in refused if "/prefect/" in r[2]] == [], refused
        text = rendered(page, f"{MLFLOW}/#/experiments", "Default")
        page.screenshot(path=shots[2])
        assert "Experiments" in text, text[-2000:]
        figure(f"viewer's browser, refused: {[r for r in refused if '/prefect/' not in r[2]]}")
    for shot in shots:
        assert shot.stat().st_size > 10_000


# --- the teammate's laptop ------------------------------------------------------------------
TEAMMATE_NETWORK = f"{PROJECT}-teammate"
TEAMMATE_SCRIPT = Path(__file__).with_name("teammate.py")
# What the laptop must not reach: every service behind the door, on its own port.
INTERNAL = {"server": 4200, "mlflow": 5000, "api": 8000, "serving": 8001, "postgres": 5432}


def _docker(*args: str, check: bool = True, timeout: float = 300, **options) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, **options
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args[:3])} exited {result.returncode}:\n{result.stderr}"
        )
    return result.stdout


def _container(compose: Compose, service: str) -> str:
    [container] = compose.run("ps", "-q", service).split()
    return container


@pytest.fixture(scope="module")
def teammate_network(compose: Compose) -> Iterator[str]:
    """A network of its own (the teammate's laptop's), which only the door also joins, as
    `gateway`; removed afterwards, whatever happened."""
    gateway = _container(compose, "gateway")
    # A killed run's network (its containers are gone with that run's stack).
    _docker("network", "rm", TEAMMATE_NETWORK, check=False)
    _docker("network", "create", TEAMMATE_NETWORK)
    try:
        _docker("network", "connect", "--alias", DOOR_NAME, TEAMMATE_NETWORK, gateway)
        try:
            yield TEAMMATE_NETWORK
        finally:
            _docker("network", "disconnect", "--force", TEAMMATE_NETWORK, gateway, check=False)
    finally:
        _docker("network", "rm", TEAMMATE_NETWORK, check=False)


def _internal_addresses(compose: Compose, network: str) -> list[tuple[str, int]]:
    """Each service's name and port, and its container's address on the stack's network."""
    targets = list(INTERNAL.items())
    for service, port in INTERNAL.items():
        [details] = json.loads(_docker("inspect", _container(compose, service)))
        networks = details["NetworkSettings"]["Networks"]
        addresses = [n["IPAddress"] for name, n in networks.items() if name != network]
        assert addresses and all(addresses), (service, networks)
        targets += [(address, port) for address in addresses]
    return targets


def test_a_teammate_s_laptop_reaches_only_the_door(
    compose: Compose, teammate_network: str, viewer: Key, operator: Key
) -> None:
    """From a container on a network that only the door shares: no credentials, 401 but on
    health; a viewer's writes, 403; an operator's trigger, 202 (and the run completes); an
    admin's new key works until revoked, then is refused within 1 s; no service behind the
    door answers directly, by name or by address; the audit log holds the writes."""
    admin = Key(compose, "admin")
    config = {
        "door": f"https://{DOOR_NAME}:8443",
        "cafile": "/door.crt",
        "viewer": viewer.headers["Authorization"].removeprefix("Bearer "),
        "operator": operator.headers["Authorization"].removeprefix("Bearer "),
        "admin": admin.headers["Authorization"].removeprefix("Bearer "),
        "deployment": _deployment_id(compose),
        "model": "trip-duration-fhv",
        "internal": _internal_addresses(compose, teammate_network),
    }
    out = _docker(
        "run", "--rm", "--network", teammate_network,
        "-v", f"{TEAMMATE_SCRIPT}:/teammate.py:ro",
        "-v", f"{compose.certificate}:/door.crt:ro",
        "-e", "TEAMMATE",  # keys in the environment, not on a command line
        "python:3.11-slim", "python", "/teammate.py",
        env=os.environ | {"TEAMMATE": json.dumps(config)},
    )  # fmt: skip
    report = json.loads(out.strip().splitlines()[-1])
    figure(f"teammate's laptop: {json.dumps(report['anonymous'])}")

    assert report["anonymous"]["protected"] == dict.fromkeys(
        ("prefect", "mlflow", "api", "serving"), 401
    ), report
    assert set(report["anonymous"]["health"].values()) == {200}, report
    viewer_writes = report["viewer"]
    assert {n: w["status"] for n, w in viewer_writes.items()} == dict.fromkeys(
        ("api", "prefect", "mlflow"), 403
    ), report
    trigger = report["operator"]
    assert trigger["status"] == 202 and trigger["run"], report
    _wait_completed(compose, trigger["run"], operator.headers)

    lifecycle = report["admin"]
    assert lifecycle["create"]["status"] == 201, lifecycle
    assert lifecycle["works"] == {"api": [200, 200], "mlflow": [200, 200]}, lifecycle
    assert lifecycle["revoke"]["status"] == 200, lifecycle
    refused_after = lifecycle["refused_after_seconds"]
    figure(f"teammate's revoked key refused after (s): {refused_after}")
    assert all(s is not None and s <= 1.0 for s in refused_after.values()), lifecycle
    assert lifecycle["later"] == {"api": 401, "mlflow": 401}, lifecycle

    assert report["door_by_name"] == "connected", report
    reached = {target: how for target, how in report["internal"].items() if how == "connected"}
    assert reached == {}, report["internal"]
    assert len(report["internal"]) >= 2 * len(INTERNAL), report["internal"]

    refused = {w["request_id"]: w for w in viewer_writes.values()}
    allowed = {
        trigger["request_id"]: (operator.name, 202),
        lifecycle["create"]["request_id"]: (admin.name, 201),
        lifecycle["revoke"]["request_id"]: (admin.name, 200),
    }
    entries = _audit(compose, set(refused) | set(allowed))
    assert set(entries) == set(refused) | set(allowed), json.dumps(entries)
    for request_id in refused:
        entry = entries[request_id]
        assert (entry["actor"], entry["method"], entry["outcome"]) == (viewer.name, "POST", 403)
    for request_id, (actor, outcome) in allowed.items():
        entry = entries[request_id]
        assert (entry["actor"], entry["outcome"]) == (actor, outcome), entry


def _address(container: str) -> tuple[str, str]:
    """A container's (network, address) on the stack's network."""
    networks = json.loads(_docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container))
    [(network, settings)] = [(n, v) for n, v in networks.items() if n.endswith("_default")]
    return network, settings["IPAddress"]


def test_the_door_follows_a_restarted_api_to_its_new_address(compose: Compose) -> None:
    """Docker gives a restarted container a free address, and a container started while it
    was down (an agent the autoscaler adds) takes its old one. The door keeps connections to
    the services open (door-run renders them as upstream groups by address) and follows the
    move: reads and the authority answer again within seconds, with no restart of the door."""
    api = _container(compose, "api")
    network, before = _address(api)
    compose.run("stop", "api")
    squatters: list[str] = []
    try:
        # Containers take the lowest free address: the API's is taken within a few.
        for _ in range(8):
            name = f"{compose.project}-squatter-{uuid.uuid4().hex[:8]}"
            _docker("run", "-d", "--rm", "--name", name, "--network", network,
                    "python:3.11-slim", "sleep", "600")  # fmt: skip
            squatters.append(name)
            if _address(name)[1] == before:
                break
        assert _address(squatters[-1])[1] == before, "no container took the API's address"
        compose.run("start", "api")
        compose.wait_healthy(timeout=120, services=("api",))
        after = _address(api)[1]
        assert after != before
        returned, deadline, status = time.monotonic(), time.monotonic() + 30, None
        while time.monotonic() < deadline:
            status = compose.http.get(f"{API}/runs", params={"limit": 1}).status_code
            if status == 200:
                break
            time.sleep(0.2)
        assert status == 200, f"the door still answers {status} 30 s after the API is back"
        figure(
            f"door: the API moved from {before} to {after}; the door answered 200 again "
            f"{time.monotonic() - returned:.1f} s after it was healthy"
        )
        logs = compose.run("logs", "--no-color", "gateway")
        assert "door-run: an upstream's address changed; nginx reloaded" in logs
    finally:
        for name in squatters:
            _docker("rm", "-f", name, check=False)
        compose.run("start", "api", check=False)


# --- the door's cost --------------------------------------------------------------------------
BENCH = REPO / "bench" / "door.py"


def test_the_door_s_cost_on_a_read_is_measured_side_by_side_with_the_api(
    compose: Compose,
) -> None:
    """bench/door.py, as `make bench-door` runs it, against this stack: GET /runs/{id} inside
    the network, directly and through the door. Its figures go to the e2e figures; speed is
    reported, not asserted: every answer must be a 200."""
    result = subprocess.run(
        [
            sys.executable, str(BENCH), "--project", compose.project,
            "--env-file", str(compose.env_file), "--json",
        ],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    ways = figures["ways"]
    for line in result.stdout.strip().splitlines()[1:-1]:
        figure(f"bench-door: {line}")
    for name, way in ways.items():
        assert way["requests"] >= 2000 and way["statuses"] == {"200": way["requests"]}, (
            name,
            way,
        )
    figure(
        f"bench-door: p50 direct {ways['direct']['p50_ms']:.2f} ms, door "
        f"{ways['door']['p50_ms']:.2f} ms; p50 added (ms) {figures['door']['p50_added_ms']:.2f}; "
        f"throughput ratio (door/direct) {figures['door']['throughput_ratio']:.2f} "
        f"(fresh verdicts: {figures['door_fresh']['p50_added_ms']:.2f} ms, "
        f"{figures['door_fresh']['throughput_ratio']:.2f})"
    )
