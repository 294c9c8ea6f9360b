"""Trigger-to-RUNNING and trigger-to-COMPLETED of a cheap run: Prefect's defaults against ours.

Starts two local stacks (embedded PostgreSQL, Prefect server, registration, one agent) on
free ports in a temporary directory:

- baseline: Prefect's default worker (PREFECT_WORKER_QUERY_SECONDS=10, no push, no fork server); its
  runs override the job command with null, so the worker starts them its default way: a
  fresh interpreter (`python -m prefect.engine`, behind Prefect's workspace supervisor);
- ours: the agent as shipped (its poll interval, push, the fork server); its runs use the
  deployments' command, `python -m agent.launch`, and start warm. The same stack also runs
  `cold` runs (command null), which separates the effect of polling from that of warm starts;
- poll: ours without push (AGENT_PUSH=false): the agent polls on its interval alone, which
  separates the effect of push (agent.push) from that of the interval.

Each run loads an already stored synthetic month (it only checks and returns), so the
figures are the orchestration's. Configurations alternate run by run, so machine noise hits
all alike. Times come from the server's state timestamps, against the client's clock at the
trigger (one machine, one clock). Before the runs, the stacks idle side by side while the
CPU time of their Prefect servers is measured: the cost of polling.

    make bench-trigger  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/devstack:tests \
        .venv/bin/python bench/trigger.py [--runs 10] [--configs baseline,cold,poll,ours]
"""

import argparse
import random
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from agent.__main__ import DEFAULT_POLL_SECONDS
from devstack.stack import LocalStack
from testkit.bench import p50, p95, start_stack
from testkit.prefect_api import PrefectApi

MONTH = {"month": "2021-01", "source": "synthetic"}
MAX_RUNS = 50
PREFECT_DEFAULT_POLL_SECONDS = "10"


@dataclass
class Config:
    name: str
    stack: str  # which stack runs it
    job_variables: dict[str, Any] | None  # per-run override; None keeps the deployment's
    to_running: list[float] = field(default_factory=list)
    to_pending: list[float] = field(default_factory=list)
    to_completed: list[float] = field(default_factory=list)


def wait_for_log(path: Path, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path.name} never said {text!r}")
        time.sleep(0.5)


def trigger(api: PrefectApi, job_variables: dict[str, Any] | None) -> tuple[float, str]:
    deployment_id = api.deployment("load-data")["id"]
    body: dict[str, Any] = {"parameters": MONTH}
    if job_variables is not None:
        body["job_variables"] = job_variables
    start = time.time()
    response = api.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
    response.raise_for_status()
    return start, response.json()["id"]


def state_times(api: PrefectApi, run_id: str) -> dict[str, float]:
    """When the run first entered each state type, as Unix times."""
    response = api.http.get("/flow_run_states/", params={"flow_run_id": run_id})
    response.raise_for_status()
    times: dict[str, float] = {}
    for state in response.json():
        stamp = datetime.fromisoformat(state["timestamp"]).timestamp()
        times[state["type"]] = min(stamp, times.get(state["type"], stamp))
    return times


def measure(api: PrefectApi, config: Config) -> None:
    start, run_id = trigger(api, config.job_variables)
    run = api.wait(run_id, timeout=300)
    if run["state"]["type"] != "COMPLETED":
        raise RuntimeError(f"{config.name} run {run_id} ended {run['state']}")
    times = state_times(api, run_id)
    config.to_pending.append(times["PENDING"] - start)
    config.to_running.append(times["RUNNING"] - start)
    config.to_completed.append(times["COMPLETED"] - start)
    print(
        f"  {config.name:8} running after {config.to_running[-1]:5.2f} s, "
        f"completed after {config.to_completed[-1]:5.2f} s",
        flush=True,
    )


def server_cpu_percent(stacks: dict[str, LocalStack], seconds: float) -> dict[str, float]:
    """CPU use of each stack's Prefect server (with its children), over the same idle window."""
    processes = {name: psutil.Process(s.processes["server"].pid) for name, s in stacks.items()}

    def cpu(process: psutil.Process) -> float:
        total = 0.0
        for p in [process, *process.children(recursive=True)]:
            try:
                times = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total

    before = {name: cpu(p) for name, p in processes.items()}
    time.sleep(seconds)
    return {name: 100 * (cpu(p) - before[name]) / seconds for name, p in processes.items()}


def speed_up(by_name: dict[str, Config], slow: str, fast: str, stages: tuple[str, ...]) -> None:
    """`slow`'s times over `fast`'s to each of `stages`, p50 and p95, when both ran."""
    if slow not in by_name or fast not in by_name:
        return
    print(f"\nspeed-up ({slow} / {fast}):")
    for stage in stages:
        a, b = (getattr(by_name[name], f"to_{stage}") for name in (slow, fast))
        label = f"to {stage.upper()}"
        print(f"  {label:13} p50 {p50(a) / p50(b):4.1f}x   p95 {p95(a) / p95(b):4.1f}x")


def report(configs: list[Config], polls: dict[str, str], idle: dict[str, float]) -> None:
    print()
    print(
        f"{'config':9}{'poll s':>7}{'start':>6}{'N':>4}"
        f"{'->RUNNING p50':>15}{'p95':>7}{'->COMPLETED p50':>17}{'p95':>7}{'->PENDING p50':>15}"
    )
    for c in configs:
        start = "warm" if c.job_variables is None else "cold"
        print(
            f"{c.name:9}{polls[c.stack]:>7}{start:>6}{len(c.to_running):>4}"
            f"{p50(c.to_running):>15.2f}{p95(c.to_running):>7.2f}"
            f"{p50(c.to_completed):>17.2f}{p95(c.to_completed):>7.2f}{p50(c.to_pending):>15.2f}"
        )
    by_name = {c.name: c for c in configs}
    speed_up(by_name, "baseline", "ours", ("running", "completed"))
    speed_up(by_name, "poll", "ours", ("pending", "running"))  # what push adds
    if idle:
        print("\nPrefect server CPU while idle (polling only):")
        for name, percent in idle.items():
            print(f"  {name:9} stack (poll every {polls[name]} s): {percent:5.2f} % of one core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help=f"runs per config (1-{MAX_RUNS})")
    parser.add_argument(
        "--configs", default="baseline,cold,poll,ours", help="which, comma-separated"
    )
    parser.add_argument(
        "--poll-seconds", default=DEFAULT_POLL_SECONDS, help="our agent's poll interval"
    )
    parser.add_argument("--idle-seconds", type=float, default=20, help="0 skips the CPU figure")
    parser.add_argument("--seed", type=int, default=1, help="seed of the trigger jitter")
    args = parser.parse_args()
    if not 1 <= args.runs <= MAX_RUNS:
        parser.error(f"--runs must be between 1 and {MAX_RUNS}")
    wanted = args.configs.split(",")
    every = [
        Config("baseline", "baseline", {"command": None}),
        Config("cold", "ours", {"command": None}),
        Config("poll", "poll", None),
        Config("ours", "ours", None),
    ]
    configs = [c for c in every if c.name in wanted]
    if not configs or len(configs) != len(wanted):
        parser.error(f"--configs takes names among {[c.name for c in every]}")
    polls = {
        "baseline": PREFECT_DEFAULT_POLL_SECONDS,
        "poll": args.poll_seconds,
        "ours": args.poll_seconds,
    }
    environments = {
        "baseline": {
            "PREFECT_WORKER_QUERY_SECONDS": polls["baseline"],
            "AGENT_FORKSERVER": "false",
            "AGENT_PUSH": "false",
        },
        "poll": {"PREFECT_WORKER_QUERY_SECONDS": polls["poll"], "AGENT_PUSH": "false"},
        "ours": {"PREFECT_WORKER_QUERY_SECONDS": polls["ours"]},
    }
    needed = sorted({c.stack for c in configs})

    stacks: dict[str, LocalStack] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trigger-") as tmp:
        try:
            for name in needed:
                stacks[name] = start_stack(Path(tmp), name, environments[name])
            apis = {name: PrefectApi(stack.api_url) for name, stack in stacks.items()}
            for name in {"poll", "ours"} & set(stacks):
                wait_for_log(stacks[name].log_dir / "forkserver.log", "agent.forkserver: ready on")
            for api in apis.values():  # store the month: measured runs only check it
                run = api.run("load-data", MONTH, timeout=300)
                assert run["state"]["type"] == "COMPLETED", run["state"]
            idle = server_cpu_percent(stacks, args.idle_seconds) if args.idle_seconds else {}

            jitter = random.Random(args.seed)
            for index in range(args.runs):
                print(f"round {index + 1}/{args.runs}", flush=True)
                # Rotate the order, and trigger at a random point of the poll cycles.
                for config in configs[index % len(configs) :] + configs[: index % len(configs)]:
                    time.sleep(jitter.uniform(0, 1))
                    measure(apis[config.stack], config)
        finally:
            for stack in stacks.values():
                stack.stop()
    report(configs, polls, idle)


if __name__ == "__main__":
    main()
