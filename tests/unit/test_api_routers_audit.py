"""The audit log (api.audit, api.routers.audit): each write, allowed or refused, appended
with who, what and the outcome; reads are not; GET /audit pages and filters; the chain
names an edited or removed row."""

import dataclasses
import datetime as dt

import pytest
from fastapi.testclient import TestClient

from api import audit
from api.audit import Entry, first_mismatch, verify
from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def client(database: FakeDatabase) -> TestClient:
    prefect = FakePrefect()
    prefect.add_flow("load-data", {"month": {"type": "string"}})
    return TestClient(api_app(prefect, database))


def test_writes_are_appended_with_their_outcome_and_reads_are_not(
    client: TestClient, database: FakeDatabase
) -> None:
    run = client.post("/runs", json={"flow": "load-data", "parameters": {}}, headers=AUTH)
    assert run.status_code == 202
    client.get("/runs", headers=AUTH)
    client.post("/runs/not-a-uuid/cancel", headers=AUTH)
    made = client.post("/keys", json={"name": "v", "role": "viewer", "owner": "o"}, headers=AUTH)
    viewer = {"Authorization": f"Bearer {made.json()['key']}"}
    client.post("/runs", json={"flow": "load-data", "parameters": {}}, headers=viewer)
    client.delete(f"/keys/{made.json()['id']}", headers={"Authorization": "Bearer nope"})
    rows = [(r.actor, r.role, r.method, r.route, r.target, r.outcome) for r in database.audit]
    assert rows == [
        ("ci", "admin", "POST", "/runs", run.json()["id"], 202),
        ("ci", "admin", "POST", "/runs/{run_id}/cancel", "not-a-uuid", 422),
        ("ci", "admin", "POST", "/keys", made.json()["id"], 201),
        ("v", "viewer", "POST", "/runs", None, 403),
        ("anonymous", None, "DELETE", "/keys/{key_id}", made.json()["id"], 401),
    ]
    request_ids = [r.request_id for r in database.audit]
    assert len(set(request_ids)) == 5 and all(request_ids)
    assert verify(database.audit_rows) == (5, None)


def test_the_log_is_read_newest_first_in_pages_and_filtered(
    client: TestClient, database: FakeDatabase
) -> None:
    for i in range(5):
        client.post("/keys", json={"name": f"k{i}", "role": "viewer", "owner": "o"}, headers=AUTH)
    client.post("/runs", json={"flow": "load-data", "parameters": {}})  # anonymous, 401
    ids, url = [], "/audit?limit=2"
    while url:
        page = client.get(url, headers=AUTH).json()
        ids += [e["id"] for e in page["entries"]]
        url = page["next"]
    assert ids == [6, 5, 4, 3, 2, 1]
    mine = client.get("/audit?actor=ci&method=POST", headers=AUTH).json()["entries"]
    assert [e["id"] for e in mine] == [5, 4, 3, 2, 1]
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert client.get("/audit", params={"since": future}, headers=AUTH).json()["entries"] == []
    assert client.get("/audit", params={"actor": "a\x00"}, headers=AUTH).status_code == 422
    entry = client.get("/audit?limit=1", headers=AUTH).json()["entries"][0]
    assert entry["actor"] == "anonymous" and entry["outcome"] == 401
    assert entry["hash"] == database.audit[-1].hash


def test_a_log_that_cannot_be_written_does_not_fail_the_request(
    client: TestClient, database: FakeDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    database.append_audit = lambda entry: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    made = client.post("/keys", json={"name": "x", "role": "viewer", "owner": "o"}, headers=AUTH)
    assert made.status_code == 201
    assert "audit entry not stored" in caplog.text


def test_a_target_is_kept_printable() -> None:
    assert audit.printable("run\x00id" + "x" * 300) == "run\\x00id" + "x" * 191


def chain(count: int) -> FakeDatabase:
    database = FakeDatabase()
    for i in range(count):
        database.append_audit(Entry("ci", "admin", "POST", "/runs", str(i), f"r{i}", 202))
    return database


def test_the_chain_names_an_edited_row() -> None:
    database = chain(5)
    assert first_mismatch(database.audit) is None
    database.audit[2] = dataclasses.replace(database.audit[2], outcome=403)
    assert first_mismatch(database.audit) == (
        3,
        "its fields do not match its hash (the row was edited)",
    )
    assert verify(database.audit_rows, batch=2)[1] == first_mismatch(database.audit)


def test_the_chain_names_the_row_after_a_removed_one() -> None:
    database = chain(5)
    del database.audit[1]
    checked, mismatch = verify(database.audit_rows, batch=2)
    assert mismatch is not None and mismatch[0] == 3 and "removed" in mismatch[1]
    assert checked == 1
    del database.audit[0]
    assert verify(database.audit_rows)[1] is not None  # the first row gone: the next one shows


def test_the_hash_covers_every_field() -> None:
    entry = Entry("ci", "admin", "POST", "/runs", "t", "r", 202)
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    base = audit.row_hash(entry, 1, at, audit.GENESIS)
    for field in dataclasses.fields(Entry):
        value = getattr(entry, field.name)
        changed = dataclasses.replace(entry, **{field.name: 0 if isinstance(value, str) else 1})
        assert audit.row_hash(changed, 1, at, audit.GENESIS) != base, field.name
    assert audit.row_hash(entry, 2, at, audit.GENESIS) != base
    assert audit.row_hash(entry, 1, at + dt.timedelta(microseconds=1), audit.GENESIS) != base
    assert audit.row_hash(entry, 1, at, "1" * 64) != base
