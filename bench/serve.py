"""Serving speed: our serving service against MLflow's own scoring server, on the same model.

Starts a local stack, registers one model as the champion of `fhv`, then starts
`mlflow models serve -m models:/trip-duration-fhv@champion --env-manager local` beside our
serving process. Measures, alternating between the two so machine noise hits both alike:
single-row latency (p50 and p99) with 1 and with 50 concurrent clients, and batch throughput
in rows per second. Loops are bounded in count and in time.

    make bench-serve  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/devstack:tests \
        .venv/bin/python bench/serve.py [--rows 200000] [--seconds 8]
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.stack import free_port
from testkit.bench import start_stack
from trainer.datasets import DATASETS
from trainer.estimators import fill_missing_ids
from trainer.features import FEATURES, prepare
from trainer.models import ModelBundle
from trainer.promotion_lock import promotion_lock
from trainer.registry import RegistryTarget, register_and_promote
from trainer.synthetic import generate_month
from trainer.traffic import as_request
from trainer.training import fit_and_evaluate

FHV = DATASETS["fhv"]
API_KEY = "bench-" + uuid.uuid4().hex
BATCH = 1000
MAX_REQUESTS = 200_000


def ours_body(trips: list[tuple[int, int]]) -> dict:
    # What send-requests sends (missing zones, -1 in the features, are null).
    return as_request(pd.DataFrame(trips, columns=FEATURES), "fhv")


def mlflow_body(trips: list[tuple[int, int]]) -> dict:
    return {"dataframe_split": {"columns": FEATURES, "data": [list(t) for t in trips]}}


class Target:
    def __init__(self, name: str, url: str, body: Callable[[list], dict], headers: dict) -> None:
        self.name, self.url, self.body, self.headers = name, url, body, headers


def encoded(target: Target, trips: list) -> bytes:
    return json.dumps(target.body(trips)).encode()


async def latencies(target: Target, trips: list, clients: int, seconds: float) -> list[float]:
    """Single-row requests from `clients` concurrent clients for `seconds`; every latency.
    Bodies are encoded beforehand, so the clock measures the server, not the client."""
    bodies = [encoded(target, [trip]) for trip in trips[:5000]]
    deadline = time.perf_counter() + seconds
    results: list[float] = []
    failures: Counter[int] = Counter()
    headers = {**target.headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:

        async def client(offset: int) -> None:
            for i in range(MAX_REQUESTS):
                if time.perf_counter() > deadline:
                    return
                body = bodies[(offset + i) % len(bodies)]
                start = time.perf_counter()
                response = await http.post(target.url, content=body)
                results.append((time.perf_counter() - start) * 1e3)
                if response.status_code != 200:
                    failures[response.status_code] += 1

        await asyncio.gather(*(client(n * 97) for n in range(clients)))
    if failures:
        raise RuntimeError(f"{target.name}: failed requests by status: {dict(failures)}")
    return results


async def throughput(target: Target, trips: list, seconds: float) -> float:
    """Rows per second with batches of BATCH rows from 4 concurrent clients."""
    bodies = [
        encoded(target, trips[start : start + BATCH]) for start in range(0, 50 * BATCH, BATCH)
    ]
    deadline = time.perf_counter() + seconds
    rows = 0
    headers = {**target.headers, "Content-Type": "application/json"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as http:

        async def client(offset: int) -> None:
            nonlocal rows
            for i in range(MAX_REQUESTS):
                if time.perf_counter() > deadline:
                    return
                body = bodies[(offset + i) % len(bodies)]
                response = await http.post(target.url, content=body)
                response.raise_for_status()
                rows += BATCH

        began = time.perf_counter()
        await asyncio.gather(*(client(n * 13) for n in range(4)))
        return rows / (time.perf_counter() - began)


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()

    train = prepare(generate_month(FHV, "2021-06", args.rows, seed=1).to_pandas(), FHV)
    val = prepare(generate_month(FHV, "2021-07", args.rows, seed=2).to_pandas(), FHV)
    trips = [tuple(int(x) for x in row) for row in fill_missing_ids(val[FEATURES].to_numpy())]
    trips = trips[:50_000]

    with tempfile.TemporaryDirectory() as root:
        stack = start_stack(
            Path(root),
            "serve",
            {
                "API_KEY": API_KEY,
                "SERVING_POLL_SECONDS": "1",
                # Speed, not the limiter, is measured.
                "SERVING_RATE_LIMIT_PER_SECOND": "1000000",
                "SERVING_RATE_LIMIT_BURST": "1000000",
            },
        )
        scorer = None
        try:
            model, metrics = fit_and_evaluate(train, val)
            bundle = ModelBundle(model, "fhv", "2021-06", "2021-07", metrics, {}, "now", None)
            target = RegistryTarget(stack.mlflow_url, stack.mlflow_url)
            with temporary_settings({PREFECT_API_URL: stack.api_url}):
                registration = register_and_promote(
                    target, bundle, val, lambda: promotion_lock(300)
                )
            print(f"registered version {registration.version} ({registration.alias})")
            port = free_port()
            scorer = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "models", "serve",
                 "-m", "models:/trip-duration-fhv@champion", "--env-manager", "local",
                 "-h", "127.0.0.1", "-p", str(port)],
                env={**os.environ, **stack.env, "MLFLOW_TRACKING_URI": stack.mlflow_url},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            stack.wait_until(
                lambda: httpx.get(f"http://127.0.0.1:{port}/ping").status_code == 200,
                120,
                "MLflow's scoring server",
            )
            stack.wait_until(
                lambda: httpx.get(f"{stack.serving_url}/readyz").status_code == 200,
                60,
                "our serving",
            )
            targets = [
                Target(
                    "ours", f"{stack.serving_url}/predict", ours_body,
                    {"Authorization": f"Bearer {API_KEY}"},
                ),
                Target("mlflow", f"http://127.0.0.1:{port}/invocations", mlflow_body, {}),
            ]  # fmt: skip
            results: dict[str, dict[str, float]] = {t.name: {} for t in targets}
            for clients in (1, 50):
                for t in targets:
                    ms = asyncio.run(latencies(t, trips, clients, args.seconds))
                    results[t.name][f"p50_{clients}"] = percentile(ms, 50)
                    results[t.name][f"p99_{clients}"] = percentile(ms, 99)
            for t in targets:
                results[t.name]["rows_per_s"] = asyncio.run(throughput(t, trips, args.seconds))
        finally:
            if scorer is not None:
                scorer.terminate()
                scorer.wait(30)
            stack.stop()

    print()
    print(f"{'server':<8} {'1 client p50':>13} {'p99':>8} {'50 clients p50':>15} {'p99':>8} "
          f"{'batch rows/s':>13}")  # fmt: skip
    for name, r in results.items():
        print(
            f"{name:<8} {r['p50_1']:>10.2f} ms {r['p99_1']:>5.2f} ms {r['p50_50']:>12.2f} ms "
            f"{r['p99_50']:>5.1f} ms {r['rows_per_s']:>13,.0f}"
        )
    ours, theirs = results["ours"], results["mlflow"]
    print()
    latency = theirs["p50_1"] / ours["p50_1"]
    rows = ours["rows_per_s"] / theirs["rows_per_s"]
    print(f"single-row p50, 1 client: ratio {latency:.2f} (MLflow's / ours)")
    print(f"batch throughput: ratio {rows:.2f} (ours / MLflow's)")


if __name__ == "__main__":
    main()
