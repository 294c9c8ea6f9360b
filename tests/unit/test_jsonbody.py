"""Strict JSON bodies (common.web.jsonbody): NaN, infinities and bad JSON a 422 that says where."""

import json

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from api.schemas import RunRequest
from common.web import problems
from common.web.jsonbody import JsonRoute


@pytest.fixture(scope="module")
def client() -> TestClient:
    """An app with the API's body parsing and error handling, echoing the request."""
    router = APIRouter(route_class=JsonRoute)

    @router.post("/echo")
    async def echo(body: RunRequest) -> RunRequest:
        return body

    app = FastAPI()
    problems.install(app)
    app.include_router(router)
    return TestClient(app)


@pytest.mark.parametrize(
    "number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e309", "[1, NaN]", '{"x": Infinity}']
)
def test_nan_and_infinities_are_refused_when_the_body_is_parsed(
    client: TestClient, number: str
) -> None:
    body = f'{{"flow": "probe", "parameters": {{"seconds": {number}}}}}'
    response = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(problems.MEDIA_TYPE)
    [error] = response.json()["errors"]
    assert error["field"] == "body"
    assert "NaN and infinite numbers are not JSON numbers" in error["message"]


def test_what_python_json_dumps_sends_for_nan_is_refused(client: TestClient) -> None:
    body = json.dumps({"flow": "probe", "parameters": {"seconds": float("nan")}})
    response = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "RFC 8259" in response.json()["detail"]


def test_other_bad_json_says_where(client: TestClient) -> None:
    bad = b'{"flow": "probe",}'
    response = client.post("/echo", content=bad, headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["errors"]
    assert error["field"] == "body" and error["message"].startswith("not valid JSON at character")


def test_finite_numbers_and_big_integers_pass(client: TestClient) -> None:
    body = b'{"flow": "probe", "parameters": {"seconds": 1e308, "n": 18446744073709551615}}'
    response = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["parameters"] == {"seconds": 1e308, "n": 18446744073709551615}


@pytest.mark.parametrize("value", [5, True, None, ["probe"]])
def test_a_flow_of_the_wrong_json_type_is_refused_not_coerced(
    client: TestClient, value: object
) -> None:
    response = client.post("/echo", json={"flow": value})
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == ["body.flow"]
