"""The autoscaler on local agent processes, against the real server: a burst scales agents
up toward the maximum, every run completes once, and scale-down stops only idle agents;
standby agents stay out of Prefect until a scale-up promotes them."""

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psutil
import pytest

from devstack.stack import LocalStack, free_port
from testkit.faults import wait_final
from testkit.metrics import parse_autoscaler_metrics
from testkit.prefect_api import FINAL_STATES, PrefectApi

pytestmark = pytest.mark.integration

POOL = "autoscale-test"
DEPLOYMENT = "autoscale"  # probe/autoscale, on POOL only
NAME = "autoscaler-test"
MAX_AGENTS = 4
RUNS_PER_AGENT = 2
COOLDOWN = 8
SHORT_RUNS, SHORT_SECONDS = 20, 3
LONG_RUNS, LONG_SECONDS = 3, 60


@dataclass
class Autoscaler:
    metrics_url: str
    stack: LocalStack
    name: str = NAME

    def metrics(self) -> dict[str, float]:
        return parse_autoscaler_metrics(httpx.get(self.metrics_url, timeout=5).text)

    def log(self) -> str:
        return (self.stack.log_dir / f"{self.name}.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def autoscaler(stack: LocalStack) -> Iterator[Autoscaler]:
    # A pool of its own, so the session's fixed agent takes none of these runs.
    stack.run_once("trainer", env={"WORK_POOL_NAME": POOL, "DEPLOYMENT_NAME": DEPLOYMENT})
    port = free_port()
    stack.start_autoscaler(
        {
            "WORK_POOL_NAME": POOL,
            "AGENT_LIMIT": str(RUNS_PER_AGENT),
            "AUTOSCALER_MIN_AGENTS": "1",
            "AUTOSCALER_MAX_AGENTS": str(MAX_AGENTS),
            "AUTOSCALER_POLL_SECONDS": "1",
            "AUTOSCALER_SCALE_DOWN_COOLDOWN_SECONDS": str(COOLDOWN),
            "AUTOSCALER_METRICS_PORT": str(port),
            # Every agent of this burst starts cold: standby agents have a test of their own.
            "AUTOSCALER_STANDBY_AGENTS": "0",
        },
        name=NAME,
    )
    yield Autoscaler(f"http://127.0.0.1:{port}/metrics", stack)
    stack.stop_service(NAME)


def _agent_pids(log: str) -> dict[str, int]:
    """Agent name -> pid, from the autoscaler's "started <name> (pid <pid>)" lines."""
    return {name: int(pid) for name, pid in re.findall(r"started (\S+) \(pid (\d+)\)", log)}


def test_burst_scales_up_runs_each_once_and_stops_only_idle_agents(
    autoscaler: Autoscaler, prefect: PrefectApi
) -> None:
    assert autoscaler.metrics()["autoscaler_current_agents"] == 1

    # Long runs first: they start first, hold agents through the scale-down, and must finish.
    def submit(count: int, seconds: float) -> list[str]:
        ids = []
        for _ in range(count):
            response = prefect.create_run("probe", {"seconds": seconds}, deployment=DEPLOYMENT)
            response.raise_for_status()
            ids.append(response.json()["id"])
        return ids

    long_ids = submit(LONG_RUNS, LONG_SECONDS)
    short_ids = submit(SHORT_RUNS, SHORT_SECONDS)
    owners: dict[str, str] = {}  # long run -> its agent
    samples: list[dict[str, float]] = []
    stopped_while_long_runs_ran = False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        metrics = autoscaler.metrics()
        runs = {run["id"]: run for run in prefect.flow_runs(long_ids + short_ids)}
        running_long = [runs[i] for i in long_ids if runs[i]["state"]["type"] == "RUNNING"]
        for run in running_long:
            # The worker labels each run it takes with its name.
            owners[run["id"]] = run["labels"]["prefect.worker.name"]
            # Kill-safety: the agent of a run that is still RUNNING is alive.
            pid = _agent_pids(autoscaler.log())[owners[run["id"]]]
            assert psutil.pid_exists(pid), f"agent {owners[run['id']]} of a running run stopped"
        if samples and running_long:
            fewer = metrics["autoscaler_current_agents"] < samples[-1]["autoscaler_current_agents"]
            stopped_while_long_runs_ran |= fewer
        samples.append(metrics)
        if all(run["state"]["type"] in FINAL_STATES for run in runs.values()):
            break
        time.sleep(1)
    else:
        pytest.fail(f"runs not final after 300 s; autoscaler log:\n{autoscaler.log()[-3000:]}")

    # Up: from 1 to the maximum, and the maximum came online.
    assert max(s["autoscaler_desired_agents"] for s in samples) == MAX_AGENTS
    assert max(s["autoscaler_current_agents"] for s in samples) == MAX_AGENTS
    assert max(s["autoscaler_online_agents"] for s in samples) >= MAX_AGENTS - 1
    # Every run completed, each started exactly once.
    for run in runs.values():
        assert run["state"]["type"] == "COMPLETED", run["state"]
        assert run["run_count"] == 1, run
    # Down while long runs still ran, sparing their agents (checked at every poll above).
    assert len(owners) == LONG_RUNS
    assert stopped_while_long_runs_ran, [s["autoscaler_current_agents"] for s in samples]

    # Idle: back to the minimum after the cooldown, the stopped agents gone.
    deadline = time.monotonic() + 60
    while autoscaler.metrics()["autoscaler_current_agents"] > 1:
        assert time.monotonic() < deadline, autoscaler.log()[-3000:]
        time.sleep(1)
    started = _agent_pids(autoscaler.log())
    assert len(started) == MAX_AGENTS
    time.sleep(3)  # stopped agents exit within a second or two of SIGTERM
    alive = [name for name, pid in started.items() if psutil.pid_exists(pid)]
    assert len(alive) == 1, autoscaler.log()[-3000:]
    assert autoscaler.metrics()["autoscaler_agents_stopped_total"] == MAX_AGENTS - 1


STANDBY_POOL, STANDBY_NAME = "standby-test", "autoscaler-standby-test"


def test_standby_agents_wait_outside_prefect_and_a_burst_promotes_them(
    stack: LocalStack, prefect: PrefectApi
) -> None:
    stack.run_once("trainer", env={"WORK_POOL_NAME": STANDBY_POOL, "DEPLOYMENT_NAME": STANDBY_POOL})
    port = free_port()
    stack.start_autoscaler(
        {
            "WORK_POOL_NAME": STANDBY_POOL,
            "AGENT_LIMIT": "2",
            "AUTOSCALER_MIN_AGENTS": "1",
            "AUTOSCALER_MAX_AGENTS": "3",
            "AUTOSCALER_STANDBY_AGENTS": "1",
            "AUTOSCALER_POLL_SECONDS": "1",
            "AUTOSCALER_SCALE_DOWN_COOLDOWN_SECONDS": "5",
            "AUTOSCALER_METRICS_PORT": str(port),
        },
        name=STANDBY_NAME,
    )
    scaler = Autoscaler(f"http://127.0.0.1:{port}/metrics", stack, STANDBY_NAME)
    try:
        stack.wait_until(
            lambda: scaler.metrics()["autoscaler_standby_ready_agents"] == 1, 120, "a warm standby"
        )
        [standby] = re.findall(r"started standby (\S+) \(pid", scaler.log())
        # Warm, but not a worker: Prefect does not see it, so no run can reach it.
        time.sleep(2)
        assert standby not in stack.online_workers(STANDBY_POOL)
        # Warm from the fork server the stack's agents share: none of its own.
        agents = psutil.Process(stack.processes[STANDBY_NAME].pid).children(recursive=True)
        assert not [a.pid for a in agents if "agent.forkserver" in a.cmdline()], agents
        assert stack.processes["forkserver"].poll() is None

        # 6 runs, 2 per agent: 3 agents wanted; the standby is promoted, one more starts cold.
        ids = [
            prefect.create_run("probe", {"seconds": 4}, deployment=STANDBY_POOL).json()["id"]
            for _ in range(6)
        ]
        runs = wait_final(prefect, ids, 180)
        assert [run["state"]["type"] for run in runs] == ["COMPLETED"] * 6
        assert all(run["run_count"] == 1 for run in runs)
        metrics = scaler.metrics()
        assert metrics["autoscaler_agents_promoted_total"] == 1, scaler.log()[-3000:]
        assert metrics["autoscaler_agents_started_total"] == 2  # the first agent, one cold
        workers = {run["labels"]["prefect.worker.name"] for run in runs}
        assert standby in workers, f"the promoted standby ran none of {workers}"
        forked = (stack.log_dir / "forkserver.log").read_text(errors="replace")
        assert all(f"flow run {run['id']}: forked engine" in forked for run in runs), forked

        # Calm again: back to one agent, and a new standby, warm, waits for the next burst.
        stack.wait_until(
            lambda: (
                (m := scaler.metrics())["autoscaler_current_agents"] == 1
                and m["autoscaler_standby_ready_agents"] == 1
            ),
            120,
            "one agent and a warm standby again",
        )
        assert len(re.findall(r"started standby (\S+) \(pid", scaler.log())) == 2
    finally:
        stack.stop_service(STANDBY_NAME)
