"""Runs start warm, from the fork server the stack's agents share, and still behave like cold
engines."""

import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from devstack.stack import LocalStack
from testkit.prefect_api import PrefectApi
from testkit.tlc import TlcServer
from trainer.datasets import DATASETS

pytestmark = pytest.mark.integration

FHV = DATASETS["fhv"]


def _agent_log(stack: LocalStack) -> str:
    """The agent's log (its launchers'), then the fork server's: the stack's agents share
    one, which logs apart (devstack's `forkserver`)."""
    logs = (stack.log_dir / name for name in ("agent-1.log", "forkserver.log"))
    return "".join(log.read_text(errors="replace") for log in logs if log.exists())


def _wait_for_agent_log(stack: LocalStack, pattern: str, timeout: float = 60) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while True:
        match = re.search(pattern, _agent_log(stack))
        if match:
            return match
        if time.monotonic() > deadline:
            raise AssertionError(f"no agent log line matches {pattern!r}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def warm(stack: LocalStack) -> LocalStack:
    """The session stack once its fork server listens (it imports while the worker starts)."""
    _wait_for_agent_log(stack, r"agent\.forkserver: ready on ")
    return stack


def _start(
    prefect: PrefectApi, flow: str, parameters: dict[str, Any], env: dict[str, str] | None = None
) -> str:
    deployment_id = prefect.deployment(flow)["id"]
    body: dict[str, Any] = {"parameters": parameters}
    if env is not None:
        body["job_variables"] = {"env": env}
    response = prefect.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
    response.raise_for_status()
    return response.json()["id"]


def _wait_for_state(prefect: PrefectApi, run_id: str, state: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (current := prefect.flow_run(run_id)["state"]["type"]) != state:
        assert current not in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}, current
        assert time.monotonic() < deadline, f"run {run_id} not {state} after {timeout} s"
        time.sleep(0.1)


def _manifest(data_dir: Path, month: str) -> dict[str, Any]:
    return json.loads((data_dir / "fhv" / f"fhv_tripdata_{month}.json").read_text())


def test_a_run_goes_through_the_fork_server(warm: LocalStack, prefect: PrefectApi) -> None:
    run = prefect.run("load-data", {"month": "2021-04", "source": "synthetic"})
    assert run["state"]["type"] == "COMPLETED", run["state"]
    _wait_for_agent_log(warm, rf"flow run {run['id']}: forked engine pid \d+")
    _wait_for_agent_log(warm, rf"flow run {run['id']}: engine pid \d+ exited 0 ")
    assert f"agent.launch: flow run {run['id']}" not in _agent_log(warm)  # no cold start


def test_the_run_environment_reaches_the_warm_engine(
    warm: LocalStack, prefect: PrefectApi, data_dir: Path
) -> None:
    # The stack runs 20,000 rows; the fork server imported the flows with that environment.
    run_id = _start(
        prefect,
        "load-data",
        {"month": "2018-01", "source": "synthetic"},
        {"SYNTHETIC_ROWS": "1500"},
    )
    assert prefect.wait(run_id)["state"]["type"] == "COMPLETED"
    assert _manifest(data_dir, "2018-01")["rows"] == 1500
    _wait_for_agent_log(warm, rf"flow run {run_id}: forked engine pid \d+")


def test_concurrent_runs_each_get_their_own_warm_engine(
    warm: LocalStack, prefect: PrefectApi, data_dir: Path
) -> None:
    months = ["2018-03", "2018-04", "2018-05"]
    run_ids = [_start(prefect, "load-data", {"month": m, "source": "synthetic"}) for m in months]
    for run_id in run_ids:
        assert prefect.wait(run_id)["state"]["type"] == "COMPLETED"
    pids = {
        _wait_for_agent_log(warm, rf"flow run {run_id}: forked engine pid (\d+)")[1]
        for run_id in run_ids
    }
    assert len(pids) == len(run_ids)
    assert all(_manifest(data_dir, m)["rows"] == 20_000 for m in months)


def test_each_warm_run_has_its_own_prefect_settings_built_once_per_environment(
    warm: LocalStack, prefect: PrefectApi, tmp_path: Path
) -> None:
    # A setting the engine reads as the run goes: whether, and where, it stores its result.
    def probe(storage: Path | None) -> str:
        env = None
        if storage is not None:
            env = {
                "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
                "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(storage),
            }
        run_id = _start(prefect, "probe", {"seconds": 0}, env)
        assert prefect.wait(run_id)["state"]["type"] == "COMPLETED"
        _wait_for_agent_log(warm, rf"flow run {run_id}: engine pid \d+ exited 0 ")
        return run_id

    def stored(storage: Path) -> int:
        return len(list(storage.iterdir())) if storage.exists() else 0

    first, second = tmp_path / "first", tmp_path / "second"
    built = ", its Prefect settings built for an earlier run"
    run_ids = [probe(first)]
    assert stored(first) >= 1
    run_ids.append(probe(first))  # the same inputs: the settings the server built
    assert stored(first) >= 2
    run_ids.append(probe(second))  # other inputs: its own, not the first's
    assert stored(second) >= 1 and stored(first) == 2
    run_ids.append(probe(None))  # the deployment's: nothing stored anywhere
    assert (stored(first), stored(second)) == (2, 1)
    lines = [
        _wait_for_agent_log(warm, rf"flow run {run_id}: forked engine pid \d+.*")[0]
        for run_id in run_ids
    ]
    assert built not in lines[0] and built in lines[1] and built not in lines[2], lines


def test_training_with_subflows_tasks_and_artifacts_runs_warm(
    warm: LocalStack, prefect: PrefectApi
) -> None:
    run = prefect.run(
        "train-model", {"date": "2018-11-01", "auto_load": True, "source": "synthetic"}
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert [a for a in prefect.artifacts(run["id"]) if a["key"] == "fhv-model-metrics"]
    _wait_for_agent_log(warm, rf"flow run {run['id']}: engine pid \d+ exited 0 ")


def test_cancelling_a_running_warm_run(
    warm: LocalStack, prefect: PrefectApi, tlc: TlcServer, data_dir: Path
) -> None:
    tlc.publish_slow(FHV, "2018-06")  # its download takes about a minute
    run_id = _start(prefect, "load-data", {"month": "2018-06", "source": "tlc"})
    _wait_for_state(prefect, run_id, "RUNNING")
    _wait_for_agent_log(warm, rf"flow run {run_id}: forked engine pid \d+")
    response = prefect.http.post(
        f"/flow_runs/{run_id}/set_state", json={"state": {"type": "CANCELLING"}}
    )
    response.raise_for_status()
    run = prefect.wait(run_id, timeout=60)
    assert run["state"]["type"] == "CANCELLED", run["state"]
    # Prefect signalled the launcher, which passed it on to the engine.
    _wait_for_agent_log(warm, rf"flow run {run_id}: relaying signal {int(signal.SIGTERM)} ")
    _wait_for_agent_log(warm, rf"flow run {run_id}: engine pid \d+ exited ")
    assert not (data_dir / "fhv" / "fhv_tripdata_2018-06.parquet").exists()


def test_a_killed_warm_engine_is_reported_crashed(
    warm: LocalStack, prefect: PrefectApi, tlc: TlcServer
) -> None:
    tlc.publish_slow(FHV, "2018-07")
    run_id = _start(prefect, "load-data", {"month": "2018-07", "source": "tlc"})
    _wait_for_state(prefect, run_id, "RUNNING")
    pid = int(_wait_for_agent_log(warm, rf"flow run {run_id}: forked engine pid (\d+)")[1])
    os.kill(pid, signal.SIGKILL)
    run = prefect.wait(run_id, timeout=60)
    # The launcher ended as the engine did, so the worker saw a process killed by SIGKILL.
    assert run["state"]["type"] == "CRASHED", run["state"]
    assert "-9" in run["state"]["message"], run["state"]["message"]


def test_without_a_fork_server_a_run_starts_cold(
    warm: LocalStack, prefect: PrefectApi, tmp_path: Path
) -> None:
    nowhere = str(tmp_path / "no-forkserver.sock")
    run_id = _start(
        prefect,
        "load-data",
        {"month": "2018-02", "source": "synthetic"},
        {"AGENT_FORKSERVER_SOCKET": nowhere},
    )
    run = prefect.wait(run_id)
    assert run["state"]["type"] == "COMPLETED", run["state"]
    line = _wait_for_agent_log(warm, rf"agent\.launch: flow run {run_id}: .*")[0]
    assert "fork server unavailable" in line and nowhere in line
    assert f"flow run {run_id}: forked engine" not in _agent_log(warm)
