"""Push (agent.push) on a real server: an agent whose poll interval is ten minutes still
takes a run within seconds of its scheduling, from Prefect's event alone; with AGENT_PUSH
false the same agent waits for its interval. A full agent takes its next run as soon as a
slot frees, not at its next poll."""

import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from devstack.stack import SERVICE_COMMANDS, LocalStack
from testkit.prefect_api import PrefectApi

pytestmark = pytest.mark.integration

POOL = "push-test"
POLL_SECONDS = 600  # the worker's own next poll: after ~7 minutes at the soonest (jitter 30 %)
# Far below a poll, far above a push (tens of milliseconds) on any busy machine.
CLAIM_LIMIT_SECONDS = 60


def _deployment_in(prefect: PrefectApi, pool: str) -> str:
    """The probe's deployment copied into `pool` (a pool the stack's own agent does not poll)."""
    prefect.http.post("/work_pools/", json={"name": pool, "type": "process"}).raise_for_status()
    source = prefect.deployment("probe")
    fields = ("flow_id", "entrypoint", "path", "job_variables", "parameter_openapi_schema")
    body: dict[str, Any] = {key: source[key] for key in fields}
    body.update(name=pool, work_pool_name=pool, enforce_parameter_schema=False)
    response = prefect.http.post("/deployments/", json=body)
    response.raise_for_status()
    return response.json()["id"]


def _agent(
    stack: LocalStack, prefect: PrefectApi, name: str, push: bool, limit: int | None = None
) -> None:
    stack.start_service(
        name,
        SERVICE_COMMANDS["agent"],
        {
            "WORK_POOL_NAME": POOL,
            "AGENT_NAME": name,
            "AGENT_PUSH": str(push).lower(),
            "PREFECT_WORKER_QUERY_SECONDS": str(POLL_SECONDS),
            **({"AGENT_LIMIT": str(limit)} if limit else {}),
        },
    )
    stack.wait_until(lambda: name in stack.online_workers(POOL), 120, f"{name} online")
    time.sleep(2)  # its first poll (at start) is done: the next is minutes away


def _seconds_to_pending(prefect: PrefectApi, deployment_id: str, timeout: float) -> float | None:
    """Seconds from a new run's SCHEDULED state to its PENDING (an agent claimed it); None if
    no agent claimed it within `timeout`. The run is cancelled when unclaimed."""
    response = prefect.http.post(
        f"/deployments/{deployment_id}/create_flow_run", json={"parameters": {"seconds": 0}}
    )
    response.raise_for_status()
    run_id = response.json()["id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = prefect.http.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
        times = {state["type"]: state["timestamp"] for state in states}
        if "PENDING" in times:
            prefect.wait(run_id, 120)
            pending, scheduled = (
                datetime.fromisoformat(times[t]) for t in ("PENDING", "SCHEDULED")
            )
            return (pending - scheduled).total_seconds()
        time.sleep(0.2)
    prefect.set_state(run_id, {"type": "CANCELLED", "name": "Cancelled"}, force=True)
    return None


@pytest.fixture
def deployment(stack: LocalStack, prefect: PrefectApi) -> Iterator[str]:
    deployment_id = _deployment_in(prefect, POOL)
    yield deployment_id
    for name in ("push-agent", "poll-agent", "full-agent"):
        if name in stack.processes:
            stack.stop_service(name)
    prefect.http.delete(f"/deployments/{deployment_id}").raise_for_status()
    prefect.http.delete(f"/work_pools/{POOL}").raise_for_status()


def test_an_agent_takes_a_run_when_it_is_scheduled_not_at_its_next_poll(
    stack: LocalStack, prefect: PrefectApi, deployment: str
) -> None:
    _agent(stack, prefect, "push-agent", push=True)
    log = stack.log_dir / "push-agent.log"
    subscribed = f"push: polling pool {POOL!r} as runs are scheduled"
    stack.wait_until(lambda: subscribed in log.read_text(), 60, "the agent's subscription")
    waits = [_seconds_to_pending(prefect, deployment, CLAIM_LIMIT_SECONDS) for _ in range(3)]
    claimed = [wait for wait in waits if wait is not None]
    assert len(claimed) == 3, f"runs waited for the poll: {waits}"
    print(f"push: SCHEDULED -> PENDING {', '.join(f'{wait:.3f}' for wait in claimed)} s")
    stack.stop_service("push-agent")

    # The control: the same agent without push leaves a run waiting for its interval.
    _agent(stack, prefect, "poll-agent", push=False)
    assert _seconds_to_pending(prefect, deployment, 10) is None


def test_a_full_agent_takes_its_next_run_as_its_slot_frees_not_at_its_next_poll(
    stack: LocalStack, prefect: PrefectApi, deployment: str
) -> None:
    _agent(stack, prefect, "full-agent", push=True, limit=1)
    log = stack.log_dir / "full-agent.log"
    subscribed = f"push: polling pool {POOL!r} as runs are scheduled"
    stack.wait_until(lambda: subscribed in log.read_text(), 60, "the agent's subscription")
    runs = []
    for seconds in (3, 0):  # the second is scheduled while the first holds the one slot
        response = prefect.http.post(
            f"/deployments/{deployment}/create_flow_run", json={"parameters": {"seconds": seconds}}
        )
        response.raise_for_status()
        runs.append(response.json()["id"])
    first = prefect.wait(runs[0], CLAIM_LIMIT_SECONDS)
    # The next poll is minutes away: only the freed slot can have claimed the second run.
    second = prefect.wait(runs[1], CLAIM_LIMIT_SECONDS)
    assert first["state"]["type"] == second["state"]["type"] == "COMPLETED"
    states = prefect.http.get("/flow_run_states/", params={"flow_run_id": runs[1]}).json()
    pending = min(datetime.fromisoformat(s["timestamp"]) for s in states if s["type"] == "PENDING")
    ended = datetime.fromisoformat(first["end_time"])
    assert pending >= ended, "one slot, two runs at once"
    print(f"slot freed: the second run claimed {(pending - ended).total_seconds():.2f} s after "
          "the first ended")  # fmt: skip
