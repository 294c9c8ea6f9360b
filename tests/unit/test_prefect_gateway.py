"""Prefect's refusals as the API answers them (api.prefect_gateway): 4xx stay 4xx, 5xx is 503."""

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from api.prefect_gateway import refused


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
