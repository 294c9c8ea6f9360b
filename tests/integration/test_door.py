"""The front door's authority and people's sessions on a real PostgreSQL (no Prefect needed:
the door only reads keys and sessions and writes the audit log): each role against a table
of routes (ours, Prefect's, MLflow's), a revocation reaching a second app instance within a
second, a login whose cookie works on a read, a disabled user refused by a second instance
within a second, only argon2id hashes stored, and the audit chain holding it all."""

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api import audit
from api.db import ApiDatabase
from common.web.auth import REVOCATION_SECONDS, Role
from common.web.db import hash_key, prepare_database
from devstack.postgres import EmbeddedPostgres, ensure_database
from testkit.apps import FakePrefect, api_app

pytestmark = pytest.mark.integration

ID = str(uuid.uuid4())
ENV_KEY = "door-env-key-" + "e" * 32


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(Path(tmp_path_factory.mktemp("door")) / "pgdata")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database(postgres: EmbeddedPostgres) -> Iterator[ApiDatabase]:
    """A database of its own for each test, its tables made and API_KEY stored."""
    url = ensure_database(postgres.url(), f"door_{uuid.uuid4().hex[:10]}")
    db = ApiDatabase(url, max_connections=4)
    prepare_database(db, ENV_KEY)
    yield db
    db.close()


def client(database: ApiDatabase) -> TestClient:
    """One API instance (its own key cache and buckets) on `database`."""
    return TestClient(api_app(FakePrefect(), database, api_key=ENV_KEY))  # type: ignore[arg-type]


def door(api: TestClient, method: str, uri: str, secret: str | None) -> int:
    headers = {"X-Original-Method": method, "X-Original-URI": uri, "X-Request-ID": "it-door"}
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return api.get("/door/check", headers=headers).status_code


# (method, public URI, the least role that passes; None: open)
TABLE: list[tuple[str, str, Role | None]] = [
    ("GET", "/api/healthz", None),
    ("GET", "/prefect/api/health", None),
    ("GET", "/mlflow/health", None),
    ("GET", "/api/runs", Role.viewer),
    ("POST", "/api/runs", Role.operator),
    ("POST", "/api/keys", Role.admin),
    ("GET", "/serving/models", Role.viewer),
    ("POST", "/serving/predict", Role.operator),
    ("GET", "/prefect/", Role.viewer),
    ("POST", "/prefect/api/flow_runs/filter", Role.viewer),
    ("POST", f"/prefect/api/deployments/{ID}/create_flow_run", Role.admin),
    ("POST", f"/prefect/api/flow_runs/{ID}/set_state", Role.operator),
    ("POST", "/prefect/api/deployments/", Role.admin),
    ("DELETE", f"/prefect/api/flow_runs/{ID}", Role.admin),
    ("GET", "/mlflow/", Role.viewer),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/search", Role.viewer),
    ("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias", Role.admin),
]


def test_each_role_against_the_table(database: ApiDatabase) -> None:
    secrets = {
        role: database.create_key(f"{role.value}-door", role.value, "tests", None)[1]
        for role in Role
    }
    api = client(database)
    for method, uri, least in TABLE:
        assert door(api, method, uri, None) == (204 if least is None else 401), uri
        for role, secret in secrets.items():
            expected = 204 if least is None or role >= least else 403
            assert door(api, method, uri, secret) == expected, (method, uri, role)
    assert door(api, "GET", "/nowhere", secrets[Role.admin]) == 403

    rows = database.audit_rows(0, 1000)
    assert audit.verify(database.audit_rows) == (len(rows), None)
    writes = [r for r in rows if r.outcome == 204]
    # Allowed writes to Prefect and MLflow only (ours are audited by the API itself).
    assert {(r.method, r.route, r.actor) for r in writes} == {
        ("POST", "/prefect/api/deployments/{id}/create_flow_run", "admin-door"),
        ("POST", "/prefect/api/flow_runs/{id}/set_state", "operator-door"),
        ("POST", "/prefect/api/flow_runs/{id}/set_state", "admin-door"),
        ("POST", "/prefect/api/deployments/", "admin-door"),
        ("DELETE", "/prefect/api/flow_runs/{id}", "admin-door"),
        ("POST", "/mlflow/ajax-api/2.0/mlflow/registered-models/alias", "admin-door"),
    }
    refused = [r for r in rows if r.outcome in (401, 403)]
    # Every refusal: 14 guarded routes without credentials, each too small a role, /nowhere.
    too_small = sum(
        1 for _, _, least in TABLE if least is not None for role in Role if role < least
    )
    assert len(refused) == 14 + too_small + 1
    assert all(r.request_id == "it-door" for r in rows)


def test_a_revocation_reaches_another_instance_within_a_second(database: ApiDatabase) -> None:
    key, secret = database.create_key("ana-door", "operator", "ana", None)
    first, second = client(database), client(database)
    uri = f"/prefect/api/flow_runs/{ID}/set_state"
    assert door(first, "POST", uri, secret) == 204
    assert door(second, "POST", uri, secret) == 204
    # Revoked through the first instance's API (as an admin would).
    revoked = first.delete(f"/keys/{key.id}", headers={"Authorization": f"Bearer {ENV_KEY}"})
    assert revoked.status_code == 200
    at = time.monotonic()
    while (status := door(second, "POST", uri, secret)) == 204:
        time.sleep(0.02)
    assert status == 401 and time.monotonic() - at < REVOCATION_SECONDS


# -- people and sessions ----------------------------------------------------------------------

PASSWORD = "a passphrase long enough"


def test_a_person_logs_in_and_is_refused_within_a_second_once_disabled(
    database: ApiDatabase,
) -> None:
    admin = {"Authorization": f"Bearer {ENV_KEY}"}
    first, second = client(database), client(database)
    made = first.post(
        "/users", json={"name": "ana", "role": "viewer", "password": PASSWORD}, headers=admin
    )
    assert made.status_code == 201
    user_id = made.json()["id"]
    # Only the argon2id hash is stored, never the password.
    with database.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT password_hash FROM users WHERE name = 'ana'")
        (stored,) = cursor.fetchone()  # type: ignore[misc]
        cursor.execute(
            "SELECT count(*) FROM audit_log WHERE concat_ws(' ', actor, route, target) LIKE %s",
            (f"%{PASSWORD}%",),
        )
        assert cursor.fetchone() == (0,)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    logged_in = first.post(
        "/login", data={"username": "ana", "password": PASSWORD, "next": "/mlflow/"},
        follow_redirects=False,
    )  # fmt: skip
    assert logged_in.status_code == 303 and logged_in.headers["location"] == "/mlflow/"
    token = first.cookies["stack_session"]
    with database.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT token_sha256 FROM sessions")
        assert [row[0] for row in cursor.fetchall()] == [hash_key(token)]
    # The cookie works on a read, on this instance and (found at once) on another.
    assert first.get("/flows").status_code == 200
    second.cookies.set("stack_session", token)
    assert second.get("/flows").status_code == 200
    assert door(second, "POST", "/prefect/api/flow_runs/filter", None) == 204
    assert door(second, "POST", f"/prefect/api/flow_runs/{ID}/set_state", None) == 403

    assert first.delete(f"/users/{user_id}", headers=admin).status_code == 200
    at = time.monotonic()
    while (status := second.get("/flows").status_code) == 200:
        time.sleep(0.02)
    assert status == 401 and time.monotonic() - at < REVOCATION_SECONDS
    assert door(second, "GET", "/prefect/", None) == 401
    refused = first.post(
        "/login", json={"username": "ana", "password": PASSWORD}, follow_redirects=False
    )
    assert refused.status_code == 401
    # Disabling is final: a disabled person's role or password is not changed.
    changed = first.patch(f"/users/{user_id}", json={"role": "admin"}, headers=admin)
    assert changed.status_code == 409 and changed.json()["type"] == "/problems/user-disabled"
    with database.connection() as conn, conn.cursor() as cursor:
        cursor.execute("SELECT role FROM users WHERE name = 'ana'")
        assert cursor.fetchone() == ("viewer",)

    logins = [r for r in database.audit_rows(0, 1000) if r.route == "/login"]
    assert [(r.actor, r.outcome) for r in logins] == [("user:ana", 303), ("anonymous", 401)]
    assert audit.verify(database.audit_rows)[1] is None
