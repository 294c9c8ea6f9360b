"""The API's process-level behaviour: refusing to start insecurely, rate limits, outages."""

import subprocess

import httpx
import pytest

from devstack.stack import BIN, REPO, LocalStack
from integration.conftest import API_KEY, free_port

pytestmark = pytest.mark.integration


def test_refuses_to_start_without_a_key(stack: LocalStack) -> None:
    env = {**stack.env, "API_PORT": str(free_port()), "API_INSECURE_DEV_MODE": "false"}
    env.pop("API_KEY")
    result = subprocess.run(
        [str(BIN / "python"), "-m", "api"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no API key configured: set API_KEY" in result.stderr


def test_rate_limit_answers_429_with_retry_after(stack: LocalStack) -> None:
    port = free_port()
    name = "api-rate-limited"
    stack.start_service(
        name,
        ["python", "-m", "api"],
        env={
            "API_PORT": str(port),
            "API_RATE_LIMIT_BURST": "3",
            "API_RATE_LIMIT_PER_SECOND": "0.2",
        },
    )
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, name)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        statuses = [httpx.get(f"{url}/runs", headers=headers).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        limited = httpx.get(f"{url}/runs", headers=headers)
        assert limited.json()["type"] == "/problems/rate-limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 5
    finally:
        stack.stop_service(name)


def test_prefect_away_is_503_with_retry_after_never_500(
    stack: LocalStack, api: httpx.Client
) -> None:
    run_id = api.get("/runs", params={"limit": 1}).json()["runs"][0]["id"]
    stack.stop_service("server")
    try:
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.headers["Retry-After"]
        assert ready.json()["checks"]["prefect"] != "ok"
        assert ready.json()["checks"]["database"] == "ok"
        for response in (
            api.post("/runs", json={"parameters": {"date": "2021-08-15"}}),
            api.get(f"/runs/{run_id}"),
            api.get("/runs"),
        ):
            assert response.status_code == 503, response.text
            assert response.json()["type"] == "/problems/service-unavailable"
            assert response.headers["Retry-After"] == "5"
    finally:
        stack.start_service("server")
        stack.wait_until(lambda: api.get("/readyz").status_code == 200, 90, "recovery")
    assert api.get(f"/runs/{run_id}").status_code == 200
