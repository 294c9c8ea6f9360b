"""Prefect's refusals as the API answers them (api.prefect_gateway): 4xx stay 4xx, 5xx is 503.
The list of flows: kept until a deployment's event, read again after it (on a real stack:
tests/integration/test_api.py)."""

import asyncio
import time
import uuid
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prefect.exceptions import PrefectHTTPStatusError

from api import prefect_gateway
from api.prefect_gateway import PrefectGateway, refused


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


class CountingClient:
    """The reads `PrefectGateway.flows` makes, counted."""

    def __init__(self) -> None:
        self.deployment_reads = 0
        self.flow = SimpleNamespace(name="probe")
        self.deployment = SimpleNamespace(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="monthly")

    async def read_deployments(self, **_: Any) -> list[Any]:
        self.deployment_reads += 1
        return [self.deployment]

    async def read_flow(self, _flow_id: uuid.UUID) -> Any:
        return self.flow


@pytest.mark.anyio
async def test_the_flows_are_kept_until_a_deployment_event_and_read_again_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prefect_gateway, "FLOWS_CACHE_SECONDS", 0.05)
    client = CountingClient()
    gateway = PrefectGateway(client, "monthly", "training")  # type: ignore[arg-type]
    # Nothing tells of changes: read again once FLOWS_CACHE_SECONDS have passed.
    assert list(await gateway.flows()) == ["probe"]
    await gateway.flows()
    assert client.deployment_reads == 1
    await asyncio.sleep(0.1)
    await gateway.flows()
    assert client.deployment_reads == 2

    # Events tell: kept however long, until one says a deployment changed.
    news: list[float] = [time.monotonic()]
    gateway.deployments_fresh_after = lambda: news[0]
    await gateway.flows()  # read before the subscription opened: stale
    assert client.deployment_reads == 3
    await asyncio.sleep(0.1)
    await gateway.flows()
    assert client.deployment_reads == 3
    news[0] = time.monotonic() + 0.2  # a deployment's event, and its settling time
    await gateway.flows()
    await gateway.flows()
    assert client.deployment_reads == 5  # each read within the settling time is a new one
    await asyncio.sleep(0.25)
    await gateway.flows()
    await gateway.flows()
    assert client.deployment_reads == 6

    # The subscription drops: FLOWS_CACHE_SECONDS again.
    gateway.deployments_fresh_after = lambda: None
    await asyncio.sleep(0.1)
    await gateway.flows()
    assert client.deployment_reads == 7
