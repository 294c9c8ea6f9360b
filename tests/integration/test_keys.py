"""Keys, roles and the audit log on the real local stack (issue 23, first part): a key's
life through the API process, a revocation reaching a second API process within a second,
expiry, serving refusing a viewer's prediction, and `python -m api.admin audit verify`
naming an edited row."""

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg2
import pytest
from sqlalchemy.engine import make_url

from api.db import ApiDatabase
from common.web.auth import REVOCATION_SECONDS
from common.web.db import hash_key, prepare_database
from devstack.postgres import ensure_database
from devstack.stack import LocalStack, free_port

pytestmark = pytest.mark.integration


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def make_key(api: httpx.Client, role: str, **extra: object) -> dict[str, str]:
    body = {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role, "owner": "tests"} | extra
    made = api.post("/keys", json=body)
    assert made.status_code == 201, made.text
    return made.json()


@pytest.fixture(scope="module")
def second_api(stack: LocalStack) -> Iterator[str]:
    """Another API process on the same database: a second replica."""
    port = free_port()
    stack.start_service("api-replica", ["python", "-m", "api"], env={"API_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "api-replica")
        yield url
    finally:
        stack.stop_service("api-replica")


def test_a_key_lives_and_dies_through_the_api(api: httpx.Client, stack: LocalStack) -> None:
    operator = make_key(api, "operator")
    secret = operator["key"]
    base = stack.service_url
    assert httpx.get(f"{base}/runs", headers=bearer(secret)).status_code == 200
    # Past the role check (no such flow), where a viewer is refused.
    unknown = {"flow": "no-such-flow"}
    assert httpx.post(f"{base}/runs", json=unknown, headers=bearer(secret)).status_code == 404
    assert httpx.get(f"{base}/keys", headers=bearer(secret)).status_code == 403
    listed = api.get("/keys", params={"limit": 100}).json()["keys"]
    assert operator["id"] in {k["id"] for k in listed}
    assert all("key" not in k for k in listed)

    rotated = api.post(f"/keys/{operator['id']}/rotate").json()
    assert httpx.get(f"{base}/runs", headers=bearer(secret)).status_code == 401
    assert httpx.get(f"{base}/runs", headers=bearer(rotated["key"])).status_code == 200

    assert api.delete(f"/keys/{operator['id']}").status_code == 200
    refused = httpx.get(f"{base}/runs", headers=bearer(rotated["key"]))
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    # Entries are appended just after their response is sent.
    entries = eventually(lambda: api.get("/audit", params={"method": "DELETE"}).json()["entries"])
    assert entries[0]["target"] == operator["id"] and entries[0]["outcome"] == 200
    assert entries[0]["actor"] == "env" and entries[0]["role"] == "admin"
    refusals = api.get("/audit", params={"actor": operator["name"]}).json()["entries"]
    assert [(e["route"], e["outcome"]) for e in refusals] == [("/runs", 404)]


def eventually(read: Callable[[], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while not (found := read()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_a_revoked_key_is_refused_by_every_replica_within_a_second(
    api: httpx.Client, second_api: str
) -> None:
    viewer = make_key(api, "viewer")
    headers = bearer(viewer["key"])
    deadline = time.monotonic() + REVOCATION_SECONDS
    while httpx.get(f"{second_api}/flows", headers=headers).status_code != 200:
        assert time.monotonic() < deadline, "a new key did not reach the replica within 1 s"
        time.sleep(0.05)
    assert api.delete(f"/keys/{viewer['id']}").status_code == 200
    revoked = time.monotonic()
    while (status := httpx.get(f"{second_api}/flows", headers=headers).status_code) == 200:
        time.sleep(0.02)
    elapsed = time.monotonic() - revoked
    assert status == 401 and elapsed < REVOCATION_SECONDS, elapsed


def test_a_key_expires(api: httpx.Client, stack: LocalStack) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)
    viewer = make_key(api, "viewer", expires_at=soon.isoformat())
    url = f"{stack.service_url}/flows"
    assert httpx.get(url, headers=bearer(viewer["key"])).status_code == 200
    time.sleep(max(0.0, (soon - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    expired = httpx.get(url, headers=bearer(viewer["key"]))
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]


def test_serving_refuses_a_viewers_prediction(api: httpx.Client, stack: LocalStack) -> None:
    body = {"dataset": "fhv", "trips": []}
    viewer, operator = make_key(api, "viewer"), make_key(api, "operator")
    url = f"{stack.serving_url}/predict"
    time.sleep(REVOCATION_SECONDS)  # serving's copy of the keys is fresh by now
    refused = httpx.post(url, json=body, headers=bearer(viewer["key"]))
    assert refused.status_code == 403 and "needs operator" in refused.json()["detail"]
    allowed = httpx.post(url, json=body, headers=bearer(operator["key"]))
    assert allowed.status_code not in (401, 403), allowed.text
    assert httpx.get(f"{stack.serving_url}/models", headers=bearer(viewer["key"])).is_success


def verify(stack: LocalStack) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": stack.env["DATABASE_URL"]}
    return subprocess.run(
        [sys.executable, "-m", "api.admin", "audit", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def app_as_superuser(stack: LocalStack) -> str:
    """The app's database, as the embedded server's superuser."""
    database = make_url(stack.env["DATABASE_URL"]).database
    return make_url(stack.admin_url).set(database=database).render_as_string(hide_password=False)


def test_the_audit_chain_shows_an_edited_row(api: httpx.Client, stack: LocalStack) -> None:
    make_key(api, "viewer")
    held = verify(stack)
    assert held.returncode == 0 and "audit chain holds" in held.stdout, held.stderr
    # The superuser: the API's role may not UPDATE the log (test_postgres_roles).
    connection = psycopg2.connect(app_as_superuser(stack))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, outcome FROM audit_log ORDER BY id DESC LIMIT 1")
            row_id, outcome = cursor.fetchone()  # type: ignore[misc]
            cursor.execute("UPDATE audit_log SET outcome = 403 WHERE id = %s", (row_id,))
            broken = verify(stack)
            cursor.execute("UPDATE audit_log SET outcome = %s WHERE id = %s", (outcome, row_id))
    finally:
        connection.close()
    assert broken.returncode == 1
    assert f"broken at row {row_id}: its fields do not match" in broken.stdout
    assert verify(stack).returncode == 0


def test_a_key_store_from_before_roles_is_migrated(stack: LocalStack) -> None:
    """The table as it was (name, hash, created_at) gains ids and roles: its keys are
    admins' and keep working."""
    url = ensure_database(stack.admin_url, f"legacy_{uuid.uuid4().hex[:8]}")
    connection = psycopg2.connect(url)
    connection.autocommit = True
    with connection, connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE api_keys (name text PRIMARY KEY, key_sha256 text NOT NULL UNIQUE, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor.execute(
            "INSERT INTO api_keys (name, key_sha256) VALUES ('env', %s), ('old', %s)",
            (hash_key("the-env-key"), hash_key("an-old-key")),
        )
    connection.close()
    database = ApiDatabase(url, max_connections=2)
    try:
        prepare_database(database, "the-env-key")
        prepare_database(database, "the-env-key")  # every start runs it again
        keys = database.key_hashes()
        assert {k.name: k.role for k in keys.values()} == {"env": "admin", "old": "admin"}
        assert len({k.id for k in keys.values()}) == 2
        assert keys[hash_key("an-old-key")].refusal(dt.datetime.now(dt.UTC)) is None
    finally:
        database.close()
