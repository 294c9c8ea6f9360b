"""The front door's cost: `GET /runs/{id}` with a key, directly on the API inside the Compose
network (`http://api:8000/runs/{id}`) and through the door (`https://gateway:8443/api/runs/{id}`,
TLS, nginx, the authority's verdict), side by side in one run, from one client inside the
network.

    make bench-door     # against the running Compose stack (`make up`), with its .env
    .venv/bin/python bench/door.py [--project NAME] [--env-file .env] [--run-id ID]
        [--threads 8] [--requests 2000] [--rounds 10] [--warmup 200] [--json]

On the host, the script finds the project's `api` container, runs itself (`--inside`) in a
throwaway container of the API's image (Python and httpx) on the API's network, with the key
(API_KEY of the env file, passed in the environment) and the door's certificate (TLS_CERT_FILE,
else certs/gateway.crt; mounted read-only). Inside, the same client reads the same run three
ways: directly; through the door; and through the door with `Cache-Control: no-cache`, which
makes the door ask the authority afresh (no verdict reused: docs/gateway.md). Each way has its
own keep-alive connection per thread; after a warm-up, `--rounds` rounds each send
`--requests / --rounds` requests each way, the ways' order turning every round, so that the
noise of a shared machine falls on all of them. It prints p50 and p95 latency (ms) and
throughput (requests per second of wall time) for each, `p50 added (ms)` and `throughput
ratio (door/direct)`; `--json` adds them as one JSON line at the end.

The stack's rate limit counts these requests (one key; through the door, twice): set
API_RATE_LIMIT_PER_SECOND and API_RATE_LIMIT_BURST high (100000) in .env for the run, else
the answers are 429s, which the script counts and reports as not 200.

The door's certificate is the only one trusted; its host name is not checked (a certificate of
`make env` names localhost and the host, not `gateway`). The run is the newest finished one
when --run-id is not given (a finished run is served from the API's memory: the figures are
the door's cost, not Prefect's).
"""

import argparse
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

REPO = Path(__file__).resolve().parents[1]
INSIDE_SCRIPT = "/bench/door.py"
INSIDE_CERT = "/bench/door.crt"
KEY_VARIABLE = "BENCH_DOOR_KEY"
DIRECT = "http://api:8000"
DOOR = "https://gateway:8443"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class Way:
    """One way of reading the run: a label, its URL and extra request headers."""

    name: str
    label: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    tls: bool = False


@dataclass
class Tally:
    """What one way's measured requests gave: latencies (seconds), statuses (0: no answer),
    the wall time of its phases (seconds)."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    wall: float = 0.0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered),
            "p50_ms": round(statistics.median(ordered) * 1e3, 3),
            "p95_ms": round(_percentile(ordered, 95) * 1e3, 3),
            "throughput_rps": round(len(ordered) / self.wall, 1),
            "statuses": {str(status): count for status, count in sorted(self.statuses.items())},
            "not_200": sum(count for status, count in self.statuses.items() if status != 200),
        }


def _percentile(ordered: list[float], q: int) -> float:
    if len(ordered) < 2:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[q - 1]


# -- inside the network ----------------------------------------------------------------------
def newest_finished_run(key: str) -> str:
    """The id of the newest finished run the API lists. Raises SystemExit when there is none."""
    page = httpx.get(
        f"{DIRECT}/runs", params={"limit": 100}, headers=_auth(key), timeout=30
    ).raise_for_status()
    for run in page.json()["runs"]:
        if run["state"]["type"] in FINAL:
            return str(run["id"])
    raise SystemExit("bench/door.py: no finished run to read: run one first (make run)")


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def measure(
    ways: list[Way], key: str, cafile: str, threads: int, requests: int, rounds: int, warmup: int
) -> dict[str, Tally]:
    """`requests` measured requests each way (after `warmup`), in `rounds` rounds, from
    `threads` threads with a keep-alive connection each per way. Phases are started and ended
    together (a barrier): each phase's wall time is the slowest thread's."""
    tls = ssl.create_default_context(cafile=cafile)
    # The certificate is pinned (the only one trusted), the name not checked (module doc).
    tls.check_hostname = False
    per_round = max(1, requests // (rounds * threads))
    per_warmup = max(1, warmup // threads)
    # (way, requests per thread, measured?) in order: the warm-up, then turning rounds.
    phases = [(way, per_warmup, False) for way in ways]
    for number in range(rounds):
        turned = ways[number % len(ways) :] + ways[: number % len(ways)]
        phases += [(way, per_round, True) for way in turned]
    tallies = {way.name: Tally() for way in ways}
    lock = threading.Lock()
    start, end = threading.Barrier(threads + 1), threading.Barrier(threads + 1)

    def worker() -> None:
        clients = {
            way.name: httpx.Client(
                headers=_auth(key) | way.headers,
                verify=tls if way.tls else True,
                timeout=30,
                limits=httpx.Limits(max_connections=1),
            )
            for way in ways
        }
        try:
            for way, count, measured in phases:
                start.wait()
                latencies, statuses = [], Counter[int]()
                client = clients[way.name]
                for _ in range(count):
                    sent = time.perf_counter()
                    try:
                        status = client.get(way.url).status_code
                    except httpx.HTTPError:
                        status = 0
                    latencies.append(time.perf_counter() - sent)
                    statuses[status] += 1
                if measured:
                    with lock:
                        tallies[way.name].latencies += latencies
                        tallies[way.name].statuses.update(statuses)
                end.wait()
        finally:
            for client in clients.values():
                client.close()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for way, _, measured in phases:
        start.wait()
        began = time.perf_counter()
        end.wait()
        if measured:
            tallies[way.name].wall += time.perf_counter() - began
    for thread in workers:
        thread.join()
    return tallies


def report(
    ways: list[Way], tallies: dict[str, Tally], threads: int, rounds: int, run_id: str
) -> dict[str, Any]:
    """The figures, printed as a table; returned as a dict (the --json line)."""
    summaries = {way.name: tallies[way.name].summary() for way in ways}
    direct = summaries["direct"]
    requests = direct["requests"]
    print(
        f"GET /runs/{{id}} ({run_id}), {threads} threads with a keep-alive connection each "
        f"way, {requests} requests each way in {rounds} interleaved rounds"
    )
    print(f"{'way':<42} {'p50 ms':>8} {'p95 ms':>8} {'req/s':>8} {'not 200':>8}")
    for way in ways:
        s = summaries[way.name]
        print(
            f"{way.label:<42} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} "
            f"{s['throughput_rps']:>8.0f} {s['not_200']:>8}"
        )
    figures: dict[str, Any] = {"run_id": run_id, "threads": threads, "ways": summaries}
    for way in ways[1:]:
        s = summaries[way.name]
        added = round(s["p50_ms"] - direct["p50_ms"], 3)
        ratio = round(s["throughput_rps"] / direct["throughput_rps"], 3)
        figures[way.name] = {"p50_added_ms": added, "throughput_ratio": ratio}
        print(
            f"{way.label}: p50 added (ms) {added:.2f}; throughput ratio (door/direct) {ratio:.2f}"
        )
    return figures


def inside(args: argparse.Namespace) -> int:
    key = os.environ[KEY_VARIABLE]
    run_id = args.run_id or newest_finished_run(key)
    ways = [
        Way("direct", "direct: http://api:8000/runs/{id}", f"{DIRECT}/runs/{run_id}"),
        Way(
            "door",
            "door: https://gateway:8443/api/runs/{id}",
            f"{DOOR}/api/runs/{run_id}",
            tls=True,
        ),
        Way(
            "door_fresh",
            "door, fresh verdict (Cache-Control: no-cache)",
            f"{DOOR}/api/runs/{run_id}",
            {"Cache-Control": "no-cache"},
            tls=True,
        ),
    ]
    tallies = measure(ways, key, INSIDE_CERT, args.threads, args.requests, args.rounds, args.warmup)
    figures = report(ways, tallies, args.threads, args.rounds, run_id)
    if args.json:
        print(json.dumps(figures))
    return 0


# -- on the host -----------------------------------------------------------------------------
def _read_env(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SystemExit(f"bench/door.py: no env file {path}: run `make env` (and `make up`)")
    return {name: value for name, value in dotenv_values(path).items() if value is not None}


def _docker(*args: str) -> str:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise SystemExit(f"bench/door.py: docker {args[0]} failed: {result.stderr.strip()}")
    return result.stdout


def host(args: argparse.Namespace) -> int:
    env = _read_env(args.env_file)
    key = env.get("API_KEY")
    if not key:
        raise SystemExit(f"bench/door.py: {args.env_file} has no API_KEY")
    cert = Path(os.environ.get("TLS_CERT_FILE") or env.get("TLS_CERT_FILE") or "certs/gateway.crt")
    cert = cert if cert.is_absolute() else (args.env_file.resolve().parent / cert)
    if not cert.is_file():
        raise SystemExit(f"bench/door.py: no certificate {cert}: run `make env`")
    # Compose names the project (COMPOSE_PROJECT_NAME, else the directory's name, its rule).
    project = ["-p", args.project] if args.project else []
    compose = ["compose", "-f", str(REPO / "docker-compose.yaml"), *project]
    found = _docker(*compose, "--env-file", str(args.env_file), "ps", "-q", "api").split()
    if not found:
        raise SystemExit(
            "bench/door.py: no running api container in the Compose project: start the "
            "stack (make up), or name the project (--project)"
        )
    [details] = json.loads(_docker("inspect", found[0]))
    image = details["Config"]["Image"]
    network = sorted(details["NetworkSettings"]["Networks"])[0]
    command = [
        "docker", "run", "--rm", "--network", network,
        "-v", f"{Path(__file__).resolve()}:{INSIDE_SCRIPT}:ro",
        "-v", f"{cert.resolve()}:{INSIDE_CERT}:ro",
        "-e", KEY_VARIABLE,  # the key's value comes from this process's environment
        image, "python", INSIDE_SCRIPT, "--inside",
        "--threads", str(args.threads), "--requests", str(args.requests),
        "--rounds", str(args.rounds), "--warmup", str(args.warmup),
        *(["--run-id", args.run_id] if args.run_id else []),
        *(["--json"] if args.json else []),
    ]  # fmt: skip
    print(f"bench/door.py: project {project}, network {network}, image {image}", flush=True)
    environment = os.environ | {KEY_VARIABLE: key}
    return subprocess.run(command, env=environment, timeout=args.timeout).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/door.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--project", help="Compose project (default: as Compose names it)")
    parser.add_argument("--env-file", type=Path, default=REPO / ".env")
    parser.add_argument("--run-id", help="the run to read (default: the newest finished one)")
    parser.add_argument("--threads", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--requests", type=int, default=2000, help="measured, each way (2000)")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds (10)")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured, each way (200)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the whole run")
    parser.add_argument("--json", action="store_true", help="the figures as a last JSON line")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("threads", "requests", "rounds", "warmup"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return inside(args) if args.inside else host(args)


if __name__ == "__main__":
    sys.exit(main())
