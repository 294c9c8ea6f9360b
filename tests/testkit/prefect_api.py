"""A small REST client of the Prefect API, for tests and benchmarks to drive real runs; and
the head of the installed Prefect's PostgreSQL schema, which a migrated database is at."""

import ssl
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class PrefectApi:
    def __init__(
        self,
        api_url: str,
        headers: dict[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`api_url`: Prefect's API (…/api); `headers` go with every request (a bearer key
        through the front door); `verify`: how the door's certificate is checked."""
        self.http = httpx.Client(base_url=api_url, headers=headers, verify=verify, timeout=30)

    def deployment(self, flow: str, name: str = "monthly") -> dict[str, Any]:
        response = self.http.get(f"/deployments/name/{flow}/{name}")
        response.raise_for_status()
        return response.json()

    def create_run(
        self,
        flow: str,
        parameters: dict[str, Any] | None = None,
        deployment: str = "monthly",
        state: dict[str, Any] | None = None,
        job_variables: dict[str, Any] | None = None,
    ) -> httpx.Response:
        deployment_id = self.deployment(flow, deployment)["id"]
        body: dict[str, Any] = {"parameters": parameters or {}}
        if state is not None:
            body["state"] = state
        if job_variables is not None:
            body["job_variables"] = job_variables
        return self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body)

    def states(self, run_id: str) -> list[str]:
        """The run's state types, oldest first."""
        response = self.http.get("/flow_run_states/", params={"flow_run_id": run_id})
        response.raise_for_status()
        ordered = sorted(response.json(), key=lambda state: state["timestamp"])
        return [state["type"] for state in ordered]

    def set_state(self, run_id: str, state: dict[str, Any], force: bool = False) -> str:
        """Propose a state; returns Prefect's verdict (ACCEPT, REJECT, ABORT, WAIT)."""
        response = self.http.post(
            f"/flow_runs/{run_id}/set_state", json={"state": state, "force": force}
        )
        response.raise_for_status()
        return response.json()["status"]

    def flow_run(self, run_id: str) -> dict[str, Any]:
        response = self.http.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            if run["state"]["type"] in FINAL_STATES:
                return run
            time.sleep(0.5)
        raise TimeoutError(f"flow run {run_id} not final after {timeout:.0f} s: {run['state']}")

    def flow_runs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        response = self.http.post(
            "/flow_runs/filter", json={"flow_runs": {"id": {"any_": run_ids}}, "limit": 200}
        )
        response.raise_for_status()
        return response.json()

    def run(self, flow: str, parameters: dict[str, Any] | None = None, timeout: float = 180):
        response = self.create_run(flow, parameters)
        response.raise_for_status()
        return self.wait(response.json()["id"], timeout)

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        response = self.http.post(
            "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}
        )
        response.raise_for_status()
        return response.json()

    def logs(self, run_id: str) -> list[str]:
        response = self.http.post(
            "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
        )
        response.raise_for_status()
        return [entry["message"] for entry in response.json()]

    def wait_for_log(self, run_id: str, text: str, timeout: float = 20) -> str:
        """The first log line containing `text`; logs reach the API in batches, after states."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.logs(run_id)
            for line in lines:
                if text in line:
                    return line
            if time.monotonic() > deadline:
                raise AssertionError(f"no log line of run {run_id} contains {text!r}: {lines}")
            time.sleep(0.5)

    def count_runs(
        self,
        states: list[str],
        *,
        deployment_id: str | None = None,
        pool: str | None = None,
        due_before: datetime | None = None,
    ) -> int:
        """Runs in any of `states` (state types), of one deployment and/or one work pool;
        with `due_before`, only those due to start before then."""
        body: dict[str, Any] = {"flow_runs": {"state": {"type": {"any_": states}}}}
        if due_before is not None:
            body["flow_runs"]["next_scheduled_start_time"] = {"before_": due_before.isoformat()}
        if deployment_id is not None:
            body["deployments"] = {"id": {"any_": [deployment_id]}}
        if pool is not None:
            body["work_pools"] = {"name": {"any_": [pool]}}
        response = self.http.post("/flow_runs/count", json=body)
        response.raise_for_status()
        return int(response.json())


def prefect_schema_head() -> str:
    """The alembic revision of the installed Prefect's newest PostgreSQL migration."""
    import prefect.server.database
    from alembic.script import ScriptDirectory

    root = Path(prefect.server.database.__file__).parent / "_migrations"
    scripts = ScriptDirectory(str(root), version_locations=[str(root / "versions" / "postgresql")])
    (head,) = scripts.get_heads()
    return head
