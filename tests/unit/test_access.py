"""The role table (common.web.access): roles are ordered, every route of both apps is in the
table (and nothing else is), and each route answers each role as the table says."""

import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from common.web.access import ROUTES, needed
from common.web.auth import Role
from common.web.problems import Problem
from testkit.apps import FakeDatabase, FakePrefect, FakeRegistry, api_app, serving_app


@given(st.sampled_from(Role), st.sampled_from(Role), st.sampled_from(Role))
def test_roles_are_totally_ordered(a: Role, b: Role, c: Role) -> None:
    assert (a <= b) == (a.rank <= b.rank) and (a < b) == (not b <= a)
    assert (a <= b or b <= a) and (a == b) == (a <= b <= a)
    if a <= b <= c:
        assert a <= c
    assert Role.viewer < Role.operator < Role.admin


def apps() -> dict[str, FastAPI]:
    return {
        "api": api_app(FakePrefect(), FakeDatabase()),
        "serving": serving_app(FakeRegistry())[0],
    }


@pytest.mark.parametrize("service", ["api", "serving"])
def test_every_route_of_the_openapi_document_is_in_the_table(service: str) -> None:
    document = apps()[service].openapi()
    routes = {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}
    assert routes == set(ROUTES[service])


# Writes anyone may make: logging in (how a person gets credentials) and out.
OPEN_WRITES = {("POST", "/login"), ("POST", "/logout")}


def test_the_table_names_each_write_above_viewer() -> None:
    for table in ROUTES.values():
        for route, role in table.items():
            method = route[0]
            if route in OPEN_WRITES:
                assert role is None
            else:
                assert method == "GET" or (role is not None and role > Role.viewer)


CASES = [
    (service, method, path, role)
    for service, table in ROUTES.items()
    for (method, path), role in table.items()
]


def call(client: TestClient, method: str, path: str, secret: str | None) -> int:
    concrete = path
    for name in ("{run_id}", "{key_id}", "{user_id}", "{session_id}"):
        concrete = concrete.replace(name, str(uuid.uuid4()))
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return client.request(method, concrete, headers=headers, json={}).status_code


@pytest.mark.parametrize(("service", "method", "path", "needed"), CASES)
def test_each_route_answers_each_role_as_the_table_says(
    service: str, method: str, path: str, needed: Role | None
) -> None:
    database = FakeDatabase()
    secrets = {role: database.add_key(role.value, role.value) for role in Role}
    if service == "api":
        app = api_app(FakePrefect(), database)
    else:
        app = serving_app(FakeRegistry(), database)[0]
    client = TestClient(app)
    without = call(client, method, path, None)
    assert (without == 401) == (needed is not None)
    for role, secret in secrets.items():
        status = call(client, method, path, secret)
        refused = needed is not None and role < needed
        assert (status == 403) == refused, (role, status)
        assert status != 401


@given(
    service=st.sampled_from(sorted(ROUTES)),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
    path=st.text(min_size=1, max_size=30).map(lambda p: "/" + p),
)
def test_a_route_not_in_the_table_is_refused(service: str, method: str, path: str) -> None:
    role = ROUTES[service].get((method, path), "absent")
    if role == "absent":
        with pytest.raises(Problem) as refused:
            needed(service, method, path)
        assert refused.value.status == 403
    elif role is not None:
        assert needed(service, method, path) == role


def test_open_reads_need_no_key_but_writes_still_do() -> None:
    client = TestClient(api_app(FakePrefect(), FakeDatabase(), api_reads_require_key=False))
    for (method, path), role in ROUTES["api"].items():
        status = call(client, method, path, None)
        if role is Role.viewer:
            assert status not in (401, 403), (method, path)
        elif role is not None:
            assert status == 401, (method, path)
