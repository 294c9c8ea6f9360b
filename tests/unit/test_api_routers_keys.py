"""/keys (api.routers.keys): made with a role, shown once, listed without secrets, rotated
(the old secret refused at once), revoked and expired (401s that say which)."""

import datetime as dt
import time
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from common.web.access import guard
from common.web.auth import REVOCATION_SECONDS, Caller, Role
from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def client(database: FakeDatabase) -> TestClient:
    return TestClient(api_app(FakePrefect(), database))


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make(client: TestClient, name: str, role: str = "viewer", **extra: object) -> httpx.Response:
    body = {"name": name, "role": role, "owner": "ana"} | extra
    return client.post("/keys", json=body, headers=AUTH)


def test_a_key_is_shown_once_and_works_with_its_role(client: TestClient) -> None:
    made = make(client, "ana-laptop", "operator")
    assert made.status_code == 201
    body = made.json()
    assert body["role"] == "operator" and body["owner"] == "ana" and body["revoked_at"] is None
    assert len(body["key"]) >= 43  # 256 bits, URL-safe base64
    assert client.get("/flows", headers=bearer(body["key"])).status_code == 200
    assert client.get("/keys", headers=bearer(body["key"])).status_code == 403
    listed = client.get("/keys", headers=AUTH).json()["keys"]
    assert [k["name"] for k in listed] == ["ci", "ana-laptop"]
    assert all("key" not in k for k in listed)


def test_a_name_is_taken_once(client: TestClient) -> None:
    assert make(client, "x").status_code == 201
    taken = make(client, "x")
    assert taken.status_code == 409 and taken.json()["type"] == "/problems/key-name-taken"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "role": "root", "owner": "a"},
        {"name": "x y", "role": "viewer", "owner": "a"},
        {"name": "x", "role": "viewer"},
        {"name": "x", "role": "viewer", "owner": "a", "expires_in_days": 0},
        {"name": "x", "role": "viewer", "owner": "a", "expires_in_days": True},
        {"name": "x", "role": "viewer", "owner": "a", "expires_at": 1_900_000_000},
        {"name": "x", "role": "viewer", "owner": "a", "expires_at": "1900000000"},
        {"name": 5, "role": "viewer", "owner": "a"},
        {"name": "x", "role": "viewer", "owner": "a\u0000b"},
        {
            "name": "x",
            "role": "viewer",
            "owner": "a",
            "expires_in_days": 1,
            "expires_at": "2030-01-01T00:00:00Z",
        },
    ],
)
def test_bad_requests_are_422s(client: TestClient, body: dict[str, object]) -> None:
    assert client.post("/keys", json=body, headers=AUTH).status_code == 422


def test_keys_come_in_pages(client: TestClient) -> None:
    for i in range(5):
        make(client, f"k{i}")
    names, url = [], "/keys?limit=2"
    while url:
        page = client.get(url, headers=AUTH).json()
        names += [k["name"] for k in page["keys"]]
        url = page["next"]
    assert names == ["ci", "k0", "k1", "k2", "k3", "k4"]


def test_a_rotated_key_refuses_its_old_secret_at_once(client: TestClient) -> None:
    made = make(client, "rotating").json()
    rotated = client.post(f"/keys/{made['id']}/rotate", headers=AUTH)
    assert rotated.status_code == 200 and rotated.json()["id"] == made["id"]
    assert client.get("/flows", headers=bearer(made["key"])).status_code == 401
    assert client.get("/flows", headers=bearer(rotated.json()["key"])).status_code == 200


def test_a_revoked_key_is_a_401_that_says_so(client: TestClient) -> None:
    made = make(client, "leaving").json()
    revoked = client.delete(f"/keys/{made['id']}", headers=AUTH)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    again = client.delete(f"/keys/{made['id']}", headers=AUTH)
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    refused = client.get("/flows", headers=bearer(made["key"]))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]
    assert client.post(f"/keys/{made['id']}/rotate", headers=AUTH).status_code == 404


def test_api_keys_own_key_is_neither_rotated_nor_revoked_here(
    client: TestClient, database: FakeDatabase
) -> None:
    """The `env` key is API_KEY's: serving and send-requests are given it too."""
    secret = database.add_key("env", "admin")
    [env] = [key for key in database.keys.values() if key.name == "env"]
    for response in (
        client.post(f"/keys/{env.id}/rotate", headers=AUTH),
        client.delete(f"/keys/{env.id}", headers=AUTH),
    ):
        assert response.status_code == 409
        assert response.json()["type"].endswith("/key-from-environment")
        assert "API_KEY" in response.json()["detail"]
    assert client.get("/flows", headers=bearer(secret)).status_code == 200


def test_an_expired_key_is_a_401_that_says_so(client: TestClient, database: FakeDatabase) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    secret = database.add_key("old", "viewer", expires_at=past)
    refused = client.get("/flows", headers=bearer(secret))
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    later = make(client, "later", expires_in_days=1).json()
    assert later["expires_at"] is not None
    assert client.get("/flows", headers=bearer(later["key"])).status_code == 200


def test_unknown_keys_are_404s(client: TestClient) -> None:
    assert client.delete(f"/keys/{uuid.uuid4()}", headers=AUTH).status_code == 404
    assert client.post(f"/keys/{uuid.uuid4()}/rotate", headers=AUTH).status_code == 404


def test_a_key_may_not_have_more_than_its_maker(database: FakeDatabase) -> None:
    app = api_app(FakePrefect(), database)
    # Only admins reach POST /keys today; the check holds for any smaller maker.
    app.dependency_overrides[guard("api")] = lambda: Caller("op", Role.operator)
    client = TestClient(app)
    assert make(client, "x", "operator").status_code == 201
    refused = make(client, "y", "admin")
    assert refused.status_code == 403 and "cannot make a admin key" in refused.json()["detail"]


@given(maker=st.sampled_from(Role), wanted=st.sampled_from(Role))
@settings(max_examples=30, deadline=None)
def test_a_key_has_at_most_its_makers_role(maker: Role, wanted: Role) -> None:
    app = api_app(FakePrefect(), FakeDatabase())
    app.dependency_overrides[guard("api")] = lambda: Caller("maker", maker)
    made = make(TestClient(app), f"k-{uuid.uuid4().hex[:8]}", wanted.value)
    assert made.status_code == (201 if wanted <= maker else 403)


def test_a_revocation_on_one_instance_reaches_another_within_a_second() -> None:
    """Two app instances on one database, as two replicas: the other one's copy of the keys
    is at most CACHE_SECONDS old."""
    database = FakeDatabase()
    one, two = (TestClient(api_app(FakePrefect(), database)) for _ in range(2))
    made = make(one, "shared").json()
    assert two.get("/flows", headers=bearer(made["key"])).status_code == 200
    assert one.delete(f"/keys/{made['id']}", headers=AUTH).status_code == 200
    revoked = time.monotonic()
    assert one.get("/flows", headers=bearer(made["key"])).status_code == 401  # at once
    while two.get("/flows", headers=bearer(made["key"])).status_code == 200:
        time.sleep(0.01)
    assert time.monotonic() - revoked < REVOCATION_SECONDS
