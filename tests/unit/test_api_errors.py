"""Bad input is a clear 4xx: strict JSON bodies, Prefect's refusals kept as 4xx, query
values the backend could not take refused first. In-process, with the API's own pieces."""

import datetime as dt
import json

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import TypeAdapter, ValidationError

from api.prefect_gateway import refused
from api.routers.runs import IsoDatetime
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


def _prefect_error(status: int, body: dict | str) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://prefect/api/deployments/x/create_flow_run")
    if isinstance(body, dict):
        response = httpx.Response(status, json=body, request=request)
    else:
        response = httpx.Response(status, text=body, request=request)
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError("refused", request=request, response=response)
    )


def test_prefect_refusals_stay_4xx_and_say_why() -> None:
    detail = "Error creating flow run: Validation failed for field 'seconds'."
    for status in (400, 409, 422):
        problem = refused(_prefect_error(status, {"detail": detail}))
        assert (problem.status, problem.slug) == (422, "validation-error")
        assert detail in problem.detail
    problem = refused(_prefect_error(409, "plain text"))
    assert problem.status == 422 and "plain text" in problem.detail
    assert refused(_prefect_error(404, {}), "run x not found").detail == "run x not found"


def test_only_prefect_5xx_is_unavailable() -> None:
    problem = refused(_prefect_error(500, {"exception_message": "boom"}))
    assert problem.status == 503 and problem.headers["Retry-After"]
    problem = refused(_prefect_error(401, {"detail": "bad auth"}))
    assert problem.status == 500 and "Retry-After" not in problem.headers


SINCE = TypeAdapter(IsoDatetime)


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00", "1e9"],
)
def test_since_the_backend_could_not_take_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        SINCE.validate_python(value)


def test_since_is_read_as_utc() -> None:
    assert SINCE.validate_python("2021-08-15T02:00:00+02:00") == dt.datetime(
        2021, 8, 15, tzinfo=dt.UTC
    )
    assert SINCE.validate_python("2021-08-15T00:00:00") == dt.datetime(2021, 8, 15, tzinfo=dt.UTC)
