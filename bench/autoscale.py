"""Draining a burst of sleeping runs: the autoscaler against a fixed single agent and a fixed
maximum of agents, in one local stack (embedded PostgreSQL, Prefect server).

The autoscaler keeps --standby warm standby agents (default: enough to reach the maximum):
they do not poll and cost no CPU while they wait, and it reports the memory they hold.

Each configuration gets a work pool of its own and the same burst: N probe runs that each
hold an agent for S seconds, every agent taking AGENT_LIMIT runs at once. For each it
measures the drain time (submission to the last run's end, server clock) against the ideal
(runs x seconds / the configuration's slots, agents x AGENT_LIMIT), the agent-seconds spent
meanwhile (agents alive, sampled twice a second), and the machine's CPU time meanwhile (all
processes: the stack's cost per run, and the drain it bounds on this many cores). The
autoscaler then goes on until it is back at its minimum: that tail is reported too. The
configurations run one after the other, each alone on the machine. It plots agents and
backlog over time during the autoscaled burst, and the runs going in each configuration
(--plot, a PNG).

    make bench-autoscale  # from the repository root, with the defaults; or, with options
    # and the PYTHONPATH the Makefile exports:
    .venv/bin/python bench/autoscale.py [--runs 24] [--seconds 5] [--standby 3] \
        [--plot bench/autoscale.png]
"""

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import psutil

from devstack.stack import SERVICE_COMMANDS, LocalStack, free_port
from testkit.bench import start_stack
from testkit.metrics import parse_autoscaler_metrics
from testkit.prefect_api import FINAL_STATES, PrefectApi

RUNS_PER_AGENT = 2
MAX_AGENTS = 4
COOLDOWN_SECONDS = 10
SAMPLE_SECONDS = 0.5
TIMEOUT_SECONDS = 900
WINDOW_SECONDS = 600


@dataclass
class Result:
    name: str
    slots: int
    drain_seconds: float = 0.0
    agent_seconds: float = 0.0
    cpu_seconds: float = 0.0  # the machine's, all processes, over the drain
    submit_seconds: float = 0.0  # to create the burst's runs (part of the drain)
    scale_back_seconds: float | None = None
    # (seconds since submission, agents, online, desired, waiting, running, standby)
    samples: list[tuple[float, ...]] = field(default_factory=list)


class Pool:
    """One configuration's pool: its deployments, its agents, how to count them."""

    def __init__(self, stack: LocalStack, name: str) -> None:
        self.stack, self.name = stack, name
        stack.run_once("trainer", env={"WORK_POOL_NAME": name, "DEPLOYMENT_NAME": name})
        self.fixed: list[str] = []
        self.metrics_url: str | None = None

    def start_fixed(self, count: int) -> None:
        for i in range(count):
            service = f"{self.name}-agent-{i}"
            self.stack.start_service(
                service,
                SERVICE_COMMANDS["agent"],
                {"WORK_POOL_NAME": self.name, "AGENT_LIMIT": str(RUNS_PER_AGENT),
                 "AGENT_NAME": service},
            )  # fmt: skip
            self.fixed.append(service)
        self.stack.wait_until(
            lambda: len(self.stack.online_workers(self.name)) == count, 120, "fixed agents"
        )

    def start_autoscaler(self, standby: int) -> None:
        port = free_port()
        self.stack.start_autoscaler(
            {
                "WORK_POOL_NAME": self.name,
                "AGENT_LIMIT": str(RUNS_PER_AGENT),
                "AUTOSCALER_MIN_AGENTS": "1",
                "AUTOSCALER_MAX_AGENTS": str(MAX_AGENTS),
                "AUTOSCALER_STANDBY_AGENTS": str(standby),
                "AUTOSCALER_POLL_SECONDS": "1",
                "AUTOSCALER_SCALE_DOWN_COOLDOWN_SECONDS": str(COOLDOWN_SECONDS),
                "AUTOSCALER_METRICS_PORT": str(port),
            },
            name=f"{self.name}-autoscaler",
        )
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        # As the fixed pools start with their agents online, this one starts warm.
        self.stack.wait_until(lambda: self.metrics()["autoscaler_standby_ready_agents"] == standby,
                              180, "warm standby agents")  # fmt: skip

    def metrics(self) -> dict[str, float]:
        assert self.metrics_url is not None
        return parse_autoscaler_metrics(httpx.get(self.metrics_url, timeout=5).text)

    def sample(self, prefect: PrefectApi) -> tuple[int, int, int, int, int, int]:
        """(agents, online, desired, waiting, running, standby)."""
        if self.metrics_url is not None:
            m = self.metrics()
            return (
                int(m["autoscaler_current_agents"]),
                int(m["autoscaler_online_agents"]),
                int(m["autoscaler_desired_agents"]),
                int(m["autoscaler_waiting_runs"]),
                int(m["autoscaler_running_runs"]),
                int(m["autoscaler_standby_agents"]),
            )
        online = len(self.stack.online_workers(self.name))
        waiting = prefect.count_runs(["SCHEDULED", "PENDING"], pool=self.name)
        running = prefect.count_runs(["RUNNING"], pool=self.name)
        return len(self.fixed), online, len(self.fixed), waiting, running, 0

    def stop(self) -> None:
        for service in [*self.fixed, f"{self.name}-autoscaler"]:
            if service in self.stack.processes:
                self.stack.stop_service(service)


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle or waiting on I/O) since boot."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq


def burst(pool: Pool, prefect: PrefectApi, runs: int, seconds: float, result: Result) -> None:
    cpu_before = busy_cpu_seconds()
    submitted = time.monotonic()
    wall_submitted = datetime.now().astimezone()

    ids = []
    for _ in range(runs):
        response = prefect.create_run("probe", {"seconds": seconds}, deployment=pool.name)
        response.raise_for_status()
        ids.append(response.json()["id"])
    result.submit_seconds = time.monotonic() - submitted
    deadline = submitted + TIMEOUT_SECONDS
    drained_at = None
    while time.monotonic() < deadline:
        now = time.monotonic() - submitted
        agents, online, desired, waiting, running, standby = pool.sample(prefect)
        result.samples.append((now, agents, online, desired, waiting, running, standby))
        if drained_at is None:
            states = [run["state"]["type"] for run in prefect.flow_runs(ids)]
            if all(state in FINAL_STATES for state in states):
                assert states == ["COMPLETED"] * runs, states
                drained_at = now
                result.cpu_seconds = busy_cpu_seconds() - cpu_before
        if drained_at is not None and (pool.metrics_url is None or agents <= 1):
            break
        time.sleep(SAMPLE_SECONDS)
    else:
        raise TimeoutError(f"{result.name}: not drained within {TIMEOUT_SECONDS} s")
    ends = [datetime.fromisoformat(run["end_time"]) for run in prefect.flow_runs(ids)]
    result.drain_seconds = (max(ends) - wall_submitted).total_seconds()
    # Agent-seconds: agents alive between two samples, over the drain window.
    for (t0, agents, *_), (t1, *_) in zip(result.samples, result.samples[1:], strict=False):
        if t0 < result.drain_seconds:
            result.agent_seconds += agents * (min(t1, result.drain_seconds) - t0)
    if pool.metrics_url is not None:
        result.scale_back_seconds = result.samples[-1][0] - result.drain_seconds


def standby_footprint(seconds: float = 5.0) -> tuple[int, float, float, list[float], float]:
    """(standby agents, their resident memory in MiB, CPU seconds they used over `seconds`,
    each one's unique memory in MiB, the shared fork server's unique memory in MiB): each
    standby is a `python -m agent` with its waiting worker (and, without a shared fork server,
    a fork server of its own). Resident memory counts pages shared with other processes in
    each; unique memory (USS) is what stopping that standby would give back. The stack's
    agents share one fork server (devstack), whatever their number: counted once, apart."""
    roots = {
        p.parent()
        for p in psutil.process_iter(["cmdline"])
        if "--standby" in (p.info["cmdline"] or []) and "agent.worker" in p.info["cmdline"]
    }
    trees = [[root, *root.children(recursive=True)] for root in roots if root]
    members = [m for tree in trees for m in tree]
    shared = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "agent.forkserver" in (p.info["cmdline"] or [])
        and any("stack-forkserver-" in part for part in p.info["cmdline"])
    ]

    def cpu() -> float:
        return sum(sum(m.cpu_times()[:2]) for m in members)

    before = cpu()
    time.sleep(seconds)
    rss = sum(m.memory_info().rss for m in members) / 2**20
    uss = [sum(m.memory_full_info().uss for m in tree) / 2**20 for tree in trees]
    shared_uss = sum(p.memory_full_info().uss for p in shared) / 2**20
    return len(roots), rss, cpu() - before, uss, shared_uss


def plot(results: dict[str, Result], path: Path, runs: int, seconds: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = results["autoscaled"]
    t = [s[0] for s in result.samples]
    fig, (top, bottom, every) = plt.subplots(3, 1, sharex=True, figsize=(9, 9))
    top.step(t, [s[3] for s in result.samples], where="post", label="desired", ls="--")
    top.step(t, [s[1] for s in result.samples], where="post", label="current (started)")
    top.step(t, [s[2] for s in result.samples], where="post", label="online in Prefect")
    top.step(t, [s[6] for s in result.samples], where="post", label="standby (warm, idle)", ls=":")
    top.set_ylabel("agents")
    top.set_ylim(0, MAX_AGENTS + 1)
    top.legend(loc="upper right")
    top.set_title(
        f"Autoscaler during a burst of {runs} runs of {seconds:g} s "
        f"({RUNS_PER_AGENT} runs per agent, max {MAX_AGENTS}, cooldown {COOLDOWN_SECONDS} s)"
    )
    bottom.step(t, [s[4] for s in result.samples], where="post", label="waiting")
    bottom.step(t, [s[5] for s in result.samples], where="post", label="running")
    bottom.axvline(result.drain_seconds, color="grey", ls=":", label="drained")
    bottom.set_ylabel("runs")
    bottom.legend(loc="upper right")
    for other in results.values():
        ideal = runs * seconds / other.slots
        (line,) = every.step([s[0] for s in other.samples], [s[5] for s in other.samples],
                             where="post", label=f"{other.name} ({other.slots} slots)")  # fmt: skip
        every.axvline(ideal, color=line.get_color(), ls=":", lw=1)
        every.axvline(other.drain_seconds, color=line.get_color(), ls="--", lw=1)
    every.set_title("runs going, each configuration (dotted: its ideal drain; dashed: its drain)")
    every.set_ylabel("running runs")
    every.set_xlabel("seconds since the burst was submitted")
    every.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=24, help="runs in the burst (1-200)")
    parser.add_argument("--seconds", type=float, default=5, help="each run's wait (0-120)")
    parser.add_argument(
        "--standby",
        type=int,
        default=MAX_AGENTS - 1,
        help=f"standby agents of the autoscaler (0-{MAX_AGENTS - 1})",
    )
    parser.add_argument(
        "--plot", type=Path, default=Path(__file__).resolve().with_name("autoscale.png")
    )
    args = parser.parse_args()
    if not 1 <= args.runs <= 200 or not 0 <= args.seconds <= 120:
        parser.error("--runs must be 1-200 and --seconds 0-120")
    if not 0 <= args.standby < MAX_AGENTS:
        parser.error(f"--standby must be 0-{MAX_AGENTS - 1}")
    footprint: tuple[int, float, float, list[float], float] = (0, 0.0, 0.0, [], 0.0)

    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory() as root:
        stack = start_stack(Path(root), "autoscale", {})
        try:
            prefect = PrefectApi(stack.api_url)
            for name, setup in [
                ("fixed-1", lambda pool: pool.start_fixed(1)),
                ("fixed-max", lambda pool: pool.start_fixed(MAX_AGENTS)),
                ("autoscaled", lambda pool: pool.start_autoscaler(args.standby)),
            ]:
                pool = Pool(stack, f"bench-{name}")
                setup(pool)
                if name == "autoscaled":
                    footprint = standby_footprint()
                print(f"{name}: draining {args.runs} runs of {args.seconds:g} s ...", flush=True)
                slots = RUNS_PER_AGENT * (1 if name == "fixed-1" else MAX_AGENTS)
                results[name] = Result(name, slots)
                try:
                    burst(pool, prefect, args.runs, args.seconds, results[name])
                finally:
                    pool.stop()
        finally:
            stack.stop()

    auto, one, most = results["autoscaled"], results["fixed-1"], results["fixed-max"]
    print(
        f"\n{args.runs} runs x {args.seconds:g} s, {RUNS_PER_AGENT} runs per agent, "
        f"max {MAX_AGENTS} agents"
    )
    cores = psutil.cpu_count() or 1
    print(f"{'configuration':<14}{'drain s':>10}{'agent-s':>10}{'agents when idle':>18}"
          f"{'ideal s':>10}{'drain/ideal':>13}{'CPU-s/run':>11}{'CPU floor s':>13}")  # fmt: skip
    for result, idle in ((one, 1), (most, MAX_AGENTS), (auto, 1)):
        ideal = args.runs * args.seconds / result.slots
        per_run, floor = result.cpu_seconds / args.runs, result.cpu_seconds / cores
        print(f"{result.name:<14}{result.drain_seconds:>10.1f}{result.agent_seconds:>10.1f}"
              f"{idle:>18}{ideal:>10.1f}{result.drain_seconds / ideal:>12.2f}x"
              f"{per_run:>11.2f}{floor:>13.1f}")  # fmt: skip
    created = ", ".join(f"{r.name} {r.submit_seconds:.1f} s" for r in results.values())
    print(f"runs created in {created} (one after the other; the drain includes it)")
    print(f"ideal: runs x seconds / slots ({RUNS_PER_AGENT} per agent); CPU: the whole machine's "
          f"busy time over the drain, per run; CPU floor: that time over its {cores} cores, "
          "the drain the CPU alone allows")  # fmt: skip
    print(
        f"autoscaled drains {one.drain_seconds / auto.drain_seconds:.2f}x as fast as fixed-1, "
        f"at {auto.drain_seconds / most.drain_seconds:.2f}x fixed-max's drain time"
    )
    print(
        f"autoscaled uses {auto.agent_seconds / most.agent_seconds:.2f}x fixed-max's "
        f"agent-seconds and {auto.agent_seconds / one.agent_seconds:.2f}x fixed-1's; "
        f"back to 1 agent {auto.scale_back_seconds:.1f} s after the drain "
        f"(cooldown {COOLDOWN_SECONDS} s)"
    )
    standbys, rss, cpu, uss, shared_uss = footprint
    print(f"standby agents: {standbys} (warm, not polling), holding {rss:.0f} MiB resident "
          f"and using {cpu:.2f} CPU-s over 5 s while they waited")  # fmt: skip
    print("unique memory (USS) per standby agent, MiB: " + ", ".join(f"{u:.0f}" for u in uss))
    print(f"the fork server all the stack's agents share: {shared_uss:.0f} MiB unique, once")
    window = WINDOW_SECONDS
    print(f"over a {window / 60:.0f}-minute window holding this burst (the measured drain, then "
          "idle at each configuration's idle count):")  # fmt: skip
    held = {r.name: r.agent_seconds + (window - r.drain_seconds) * idle
            for r, idle in ((one, 1), (most, MAX_AGENTS), (auto, 1))}  # fmt: skip
    print(
        f"  agent-seconds: fixed-1 {held['fixed-1']:.0f}, fixed-max {held['fixed-max']:.0f}, "
        f"autoscaled {held['autoscaled']:.0f}: autoscaled / fixed-max = "
        f"{held['autoscaled'] / held['fixed-max']:.2f}"
    )
    plot(results, args.plot, args.runs, args.seconds)


if __name__ == "__main__":
    main()
