"""/door/check (api.routers.door) in-process: nginx's question about a request answered by
the contract (204 with who, 401 with a challenge, 403 with a reason, 429 with Retry-After),
with the original request's credentials, and the audit entries it appends."""

import pytest
from fastapi.testclient import TestClient

from common.web.auth import Role
from testkit.apps import FakeDatabase, FakePrefect, api_app

ID = "0b5c9b3e-4c1e-4f57-9c38-2f6a3f0c7a11"
CREATE_RUN = f"/prefect/api/deployments/{ID}/create_flow_run"


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def secrets(database: FakeDatabase) -> dict[Role, str]:
    return {role: database.add_key(f"{role.value}-key", role.value) for role in Role}


@pytest.fixture
def client(database: FakeDatabase) -> TestClient:
    return TestClient(api_app(FakePrefect(), database))


def check(
    client: TestClient, method: str, uri: str, secret: str | None = None, **headers: str
) -> tuple[int, dict[str, str]]:
    sent = {"X-Original-Method": method, "X-Original-URI": uri, "X-Request-ID": "door-1"}
    if secret is not None:
        sent["Authorization"] = f"Bearer {secret}"
    answer = client.get("/door/check", headers=sent | headers)
    return answer.status_code, dict(answer.headers)


def test_a_viewer_reads_and_is_named(client: TestClient, secrets: dict[Role, str]) -> None:
    status, headers = check(client, "POST", "/prefect/api/flow_runs/filter", secrets[Role.viewer])
    assert status == 204
    assert headers["x-door-caller"] == "viewer-key" and headers["x-door-role"] == "viewer"


def test_a_write_needs_its_role(client: TestClient, secrets: dict[Role, str]) -> None:
    status, headers = check(client, "POST", CREATE_RUN, secrets[Role.viewer])
    assert status == 403
    assert headers["x-door-reason"] == (
        "viewer-key is a viewer; POST /prefect/api/deployments/{id}/create_flow_run needs operator"
    )
    assert headers["content-type"] == "application/problem+json"
    assert check(client, "POST", CREATE_RUN, secrets[Role.operator])[0] == 204
    alias = "/mlflow/ajax-api/2.0/mlflow/registered-models/alias"
    assert check(client, "POST", alias, secrets[Role.operator])[0] == 403
    assert check(client, "POST", alias, secrets[Role.admin])[0] == 204


def test_no_or_a_bad_key_is_a_401_with_a_challenge(client: TestClient) -> None:
    for secret in (None, "not-a-key"):
        status, headers = check(client, "GET", "/prefect/", secret)
        assert status == 401 and headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_refused_and_named(
    client: TestClient, database: FakeDatabase, secrets: dict[Role, str]
) -> None:
    key = next(k for k in database.keys.values() if k.name == "admin-key")
    database.revoke_key(key.id)  # before the door's first read of the keys
    status, headers = check(client, "POST", CREATE_RUN, secrets[Role.admin])
    assert status == 401 and headers["www-authenticate"] == "Bearer"
    [entry] = database.audit
    assert (entry.actor, entry.role, entry.outcome) == ("admin-key", "admin", 401)


def test_health_is_open_without_credentials(client: TestClient) -> None:
    for uri in ("/api/healthz", "/prefect/api/health", "/mlflow/health", "/serving/readyz"):
        status, headers = check(client, "GET", uri)
        assert status == 204 and headers["x-door-caller"] == "anonymous", uri


@pytest.mark.parametrize(
    "uri",
    [
        "/api/door/check",
        "/prefect/api/flow_runs/filter/../x/set_state",
        "/prefect/api/flow_runs%2Ffilter",
        "//prefect/api/flow_runs/filter",
        "/nowhere",
        "http://evil/prefect/",
    ],
)
def test_what_no_one_may_do_is_a_403_whoever_asks(
    client: TestClient, secrets: dict[Role, str], uri: str
) -> None:
    status, headers = check(client, "POST", uri, secrets[Role.admin])
    assert status == 403 and headers["x-door-reason"]


def test_the_question_must_be_asked_whole(client: TestClient) -> None:
    answer = client.get("/door/check", headers={"X-Original-Method": "GET"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "header.x-original-uri"


def test_writes_and_refusals_are_audited_reads_are_not(
    client: TestClient, database: FakeDatabase, secrets: dict[Role, str]
) -> None:
    check(client, "POST", "/prefect/api/flow_runs/filter", secrets[Role.viewer])
    check(client, "GET", "/mlflow/", secrets[Role.viewer])
    assert database.audit == []
    check(client, "POST", f"/prefect/api/flow_runs/{ID}/set_state", secrets[Role.operator])
    check(client, "DELETE", f"/prefect/api/deployments/{ID}", secrets[Role.operator])
    check(client, "GET", "/prefect/")
    check(client, "GET", "/api/runs", secrets[Role.viewer])  # our API audits its own writes
    check(client, "GET", "/nowhere/x?token=secret", secrets[Role.viewer])
    rows = [(r.actor, r.role, r.method, r.route, r.target, r.outcome) for r in database.audit]
    assert rows == [
        ("operator-key", "operator", "POST", "/prefect/api/flow_runs/{id}/set_state", ID, 204),
        ("operator-key", "operator", "DELETE", "/prefect/api/deployments/{id}", ID, 403),
        ("anonymous", None, "GET", "/prefect/{path:path}", None, 401),
        ("anonymous", None, "GET", "/nowhere/x", None, 403),
    ]
    assert all(r.request_id == "door-1" for r in database.audit)


def test_a_flood_is_a_429(database: FakeDatabase, secrets: dict[Role, str]) -> None:
    client = TestClient(
        api_app(FakePrefect(), database, api_rate_limit_burst=2, api_rate_limit_per_second=0.01)
    )
    statuses = [check(client, "GET", "/prefect/", secrets[Role.viewer])[0] for _ in range(3)]
    status, headers = check(client, "GET", "/prefect/", secrets[Role.viewer])
    assert statuses == [204, 204, 429] and status == 429 and int(headers["retry-after"]) >= 1
    # The door's buckets are its own: the API still answers the same key.
    assert (
        client.get(
            "/flows", headers={"Authorization": f"Bearer {secrets[Role.viewer]}"}
        ).status_code
        == 200
    )
    assert database.audit == []  # throttled, not judged
