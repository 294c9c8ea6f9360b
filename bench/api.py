"""API benchmark: trigger latency against Prefect's default worker settings, and read load.

Two local stacks run side by side in one run (same machine, interleaved triggers):
  - ours:     the agent as `make dev` and the images run it;
  - baseline: Prefect's default worker settings (poll every 10 s and only then, a fresh
    interpreter per run).
For each, N runs of a trivial flow (load-data of a month already stored: it checks the month
and returns) are triggered with POST /runs; the time to RUNNING and to COMPLETED is read from
the run's own start and end times. Then 50 concurrent clients read GET /runs/{id} on our API
and, as the baseline, GET /api/flow_runs/{id} on the Prefect server behind it. Last, for
--wait-runs runs of the probe (1 s each) on our stack, three clients follow each run side
by side: one waits (GET /runs/{id}?wait=60), one streams (GET /runs/{id}/events, until
its final `state` event), one polls GET /runs/{id} every second; each one's delay is from
the run's end (its final state's time in Prefect) to its answer.

    make bench-api  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/devstack:tests \
        .venv/bin/python bench/api.py [--runs 20] [--read-seconds 10] [--wait-runs 20]

All traffic goes to 127.0.0.1; loops are bounded in count and time.
"""

import argparse
import concurrent.futures
import datetime as dt
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from devstack.stack import LocalStack
from testkit import sse
from testkit.bench import percentile, start_stack

KEY = "bench-key-" + "k" * 32
TRIVIAL = {"flow": "load-data", "parameters": {"month": "2021-06", "source": "synthetic"}}
# What "Prefect's default worker settings" means for the baseline agent.
BASELINE_ENV = {
    "PREFECT_WORKER_QUERY_SECONDS": "10",
    "AGENT_FORKSERVER": "false",
    "AGENT_PUSH": "false",
}
COMMON_ENV = {
    "API_KEY": KEY,
    "API_INSECURE_DEV_MODE": "false",
    "API_RATE_LIMIT_PER_SECOND": "100000",
    "API_RATE_LIMIT_BURST": "100000",
}
TIMEOUT = 120.0
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def client(stack: LocalStack) -> httpx.Client:
    return httpx.Client(
        base_url=stack.service_url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    )


def trigger_and_wait(api: httpx.Client) -> tuple[float, float]:
    """Seconds from POST /runs to the run's start, and to its end."""
    sent = dt.datetime.now(dt.UTC)
    response = api.post("/runs", json=TRIVIAL)
    response.raise_for_status()
    run_id = response.json()["id"]
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        run = api.get(f"/runs/{run_id}").json()
        if run["state"]["type"] in FINAL:
            if run["state"]["type"] != "COMPLETED":
                raise RuntimeError(f"run {run_id} ended {run['state']}")
            started = dt.datetime.fromisoformat(run["started"])
            ended = dt.datetime.fromisoformat(run["ended"])
            return (started - sent).total_seconds(), (ended - sent).total_seconds()
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} did not finish within {TIMEOUT:.0f} s")


def read_load(url: str, headers: dict[str, str], seconds: float, clients: int = 50):
    """Requests per second and latencies of `clients` threads reading `url` for `seconds`."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker() -> None:
        nonlocal errors
        with httpx.Client(headers=headers, timeout=30) as http:
            for _ in range(100_000):  # bounded; the deadline ends it first
                if time.monotonic() > stop:
                    return
                start = time.perf_counter()
                ok = http.get(url).status_code == 200
                elapsed = time.perf_counter() - start
                with lock:
                    latencies.append(elapsed)
                    errors += not ok

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    return len(latencies) / (time.monotonic() - began), latencies, errors


def _answered_at(api: httpx.Client, run_id: str, wait: bool, phase: float) -> float:
    """When (Unix time) a client learnt that run `run_id` had ended: waiting on it, or
    polling it every second from `phase` seconds on."""
    deadline = time.monotonic() + TIMEOUT
    if wait:
        while time.monotonic() < deadline:
            run = api.get(f"/runs/{run_id}", params={"wait": 60}, timeout=90).json()
            if run["state"]["type"] in FINAL:
                return time.time()
        raise TimeoutError(f"run {run_id} not final within {TIMEOUT:.0f} s")
    time.sleep(phase)
    while time.monotonic() < deadline:
        if api.get(f"/runs/{run_id}").json()["state"]["type"] in FINAL:
            return time.time()
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} not final within {TIMEOUT:.0f} s")


def _streamed_at(api: httpx.Client, run_id: str) -> float:
    """When (Unix time) a client streaming run `run_id`'s events got its final state."""
    with api.stream("GET", f"/runs/{run_id}/events", timeout=TIMEOUT) as response:
        response.raise_for_status()
        for event in sse.events(response.iter_lines()):
            if event["event"] == "state" and event["data"]["type"] in FINAL:
                return time.time()
    raise RuntimeError(f"the stream of run {run_id} ended without its final state")


def wait_against_poll(api: httpx.Client, runs: int) -> None:
    """Print how long after a run's end a waiting, a streaming and a polling client hear of
    it."""
    delays: dict[str, list[float]] = {"wait": [], "stream": [], "poll every 1 s": []}
    jitter = random.Random(1)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        for _ in range(runs):
            created = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 1}})
            created.raise_for_status()
            run_id = created.json()["id"]
            waiting = pool.submit(_answered_at, api, run_id, True, 0)
            streaming = pool.submit(_streamed_at, api, run_id)
            polling = pool.submit(_answered_at, api, run_id, False, jitter.uniform(0, 1))
            ended = dt.datetime.fromisoformat(
                api.get(f"/runs/{run_id}", params={"wait": 60}).json()["ended"]
            )
            followed = (("wait", waiting), ("stream", streaming), ("poll every 1 s", polling))
            for label, future in followed:
                delays[label].append(future.result() - ended.timestamp())
    print(f"\nrun ended -> client knows, over {runs} runs of 1 s, milliseconds")
    print(f"{'client':16} {'p50':>8} {'p99':>8}")
    for label, values in delays.items():
        print(f"{label:16} {percentile(values, 50) * 1e3:8.0f} {percentile(values, 99) * 1e3:8.0f}")
    polled = percentile(delays["poll every 1 s"], 50)
    for label, client_name in (("wait", "waiting"), ("stream", "streaming")):
        ratio = polled / percentile(delays[label], 50)
        print(f"{label} ratio {ratio:.1f} (polling's p50 delay / {client_name}'s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="triggers per stack (max 50)")
    parser.add_argument("--read-seconds", type=float, default=10.0)
    parser.add_argument("--wait-runs", type=int, default=20, help="runs followed (max 50)")
    args = parser.parse_args()
    runs = max(1, min(args.runs, 50))

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        print("starting both stacks ...", flush=True)
        stacks: dict[str, LocalStack] = {}
        try:
            stacks["ours"] = start_stack(root, "ours", COMMON_ENV)
            stacks["baseline"] = start_stack(root, "baseline", {**COMMON_ENV, **BASELINE_ENV})
            apis = {name: client(stack) for name, stack in stacks.items()}
            for api in apis.values():  # store the month once; not timed
                trigger_and_wait(api)
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in stacks}
            for i in range(runs):
                for name, api in apis.items():
                    running, completed = trigger_and_wait(api)
                    results[name].append((running, completed))
                    print(
                        f"  run {i + 1}/{runs} {name:8}: RUNNING after {running:5.2f} s,"
                        f" COMPLETED after {completed:5.2f} s",
                        flush=True,
                    )

            print(f"\ntrigger latency over {runs} runs (POST /runs -> state), seconds")
            print(f"{'stack':10} {'RUNNING p50':>12} {'p95':>7} {'COMPLETED p50':>14} {'p95':>7}")
            summary = {}
            for name, pairs in results.items():
                running = [p[0] for p in pairs]
                completed = [p[1] for p in pairs]
                summary[name] = statistics.median(running), statistics.median(completed)
                print(
                    f"{name:10} {summary[name][0]:12.2f} {percentile(running, 95):7.2f}"
                    f" {summary[name][1]:14.2f} {percentile(completed, 95):7.2f}"
                )
            (base_running, base_completed), (our_running, our_completed) = (
                summary["baseline"],
                summary["ours"],
            )
            print(f"to RUNNING, baseline / ours (p50): {base_running / our_running:.1f}x")
            print(f"to COMPLETED, baseline / ours (p50): {base_completed / our_completed:.1f}x")

            ours = stacks["ours"]
            run_id = apis["ours"].get("/runs", params={"limit": 1}).json()["runs"][0]["id"]
            print(f"\nreads, 50 concurrent clients, {args.read_seconds:.0f} s each")
            print(f"{'endpoint':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
            table = {}
            for label, url, headers in (
                (
                    "our GET /runs/{id}",
                    f"{ours.service_url}/runs/{run_id}",
                    {"Authorization": f"Bearer {KEY}"},
                ),
                ("Prefect GET /api/flow_runs/{id}", f"{ours.api_url}/flow_runs/{run_id}", {}),
            ):
                rate, latencies, errors = read_load(url, headers, args.read_seconds)
                table[label] = rate
                print(
                    f"{label:34} {rate:8.0f} {percentile(latencies, 50) * 1e3:8.1f}"
                    f" {percentile(latencies, 99) * 1e3:8.1f} {errors:7d}"
                )
            ratio = table["our GET /runs/{id}"] / table["Prefect GET /api/flow_runs/{id}"]
            print(f"read ratio {ratio:.2f} (our GET /runs/{{id}} req/s / Prefect's)")
            wait_against_poll(apis["ours"], max(1, min(args.wait_runs, 50)))
        finally:
            for stack in stacks.values():
                stack.stop()


if __name__ == "__main__":
    main()
