"""Fuzz the API from its own OpenAPI document with schemathesis: no 5xx, responses match."""

import subprocess

import httpx
import pytest

from devstack.stack import BIN, LocalStack
from integration.conftest import API_KEY, free_port
from testkit.prefect_api import PrefectApi

pytestmark = [pytest.mark.integration, pytest.mark.runs_last]
MAX_EXAMPLES = 10
MAX_SECONDS = 150


def test_schemathesis_finds_no_failures(stack: LocalStack, prefect: PrefectApi) -> None:
    port = free_port()
    name = "api-fuzzed"
    # Its own process with a generous rate limit, so that fuzzing is not mostly 429s.
    stack.start_service(
        name, ["python", "-m", "api"],
        env={"API_PORT": str(port), "API_RATE_LIMIT_BURST": "10000"},
    )  # fmt: skip
    # Runs the fuzzer creates stay scheduled on a paused pool, and are deleted afterwards.
    prefect.http.patch("/work_pools/training", json={"is_paused": True}).raise_for_status()
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, name)
        result = subprocess.run(
            [
                str(BIN / "schemathesis"), "run", f"{url}/openapi.json",
                "--header", f"Authorization: Bearer {API_KEY}",
                "--checks", "all",
                # `parameters` is free-form in the OpenAPI document: what a flow accepts is
                # its deployment's schema, known only at run time, and checked then (422).
                "--exclude-checks", "positive_data_acceptance",
                "--max-examples", str(MAX_EXAMPLES),
                "--seed", "1",
                # One worker: schemathesis threads call ast.parse concurrently, and CPython 3.11.7
                # races on it ("AST constructor recursion depth mismatch", cpython gh-106905).
                "--workers", "1",
                "--max-time", str(MAX_SECONDS),
            ],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        print(result.stdout[-6000:], result.stderr[-2000:])
        assert result.returncode == 0, result.stdout[-6000:]
    finally:
        stack.stop_service(name)
        _delete_scheduled_api_runs(prefect)
        prefect.http.patch("/work_pools/training", json={"is_paused": False}).raise_for_status()


def _delete_scheduled_api_runs(prefect: PrefectApi) -> None:
    runs = prefect.http.post(
        "/flow_runs/filter",
        json={
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}, "tags": {"all_": ["api"]}},
            "limit": 200,
        },
    ).json()
    for run in runs:
        prefect.http.delete(f"/flow_runs/{run['id']}")
