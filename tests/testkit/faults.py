"""What fault tests share, in local mode and in Compose: waiting for runs through an outage,
watching our API through it, and a burst of triggers."""

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from devstack.stack import wait_until
from testkit.prefect_api import FINAL_STATES, PrefectApi


def wait_running(prefect: PrefectApi, run_id: str, timeout: float = 90) -> dict:
    return wait_until(
        lambda: (run := prefect.flow_run(run_id))["state"]["type"] == "RUNNING" and run,
        timeout,
        f"run {run_id} to be RUNNING",
    )


def wait_final(prefect: PrefectApi, run_ids: list[str], timeout: float) -> list[dict]:
    """The runs once final. Crashed does not count: the autoscaler retries crashed runs, and
    a run that stays Crashed times out here (the message says where each run is)."""
    final = FINAL_STATES - {"CRASHED"}

    def runs() -> list[dict]:
        found = []
        for start in range(0, len(run_ids), 200):
            found += prefect.flow_runs(run_ids[start : start + 200])
        return found

    try:
        return wait_until(
            lambda: (found := runs()) and all(r["state"]["type"] in final for r in found) and found,
            timeout,
            f"{len(run_ids)} runs to be final",
            interval=1,
        )
    except TimeoutError as error:
        states = Counter(r["state"]["type"] for r in runs())
        raise TimeoutError(f"{error}: {dict(states)}") from None


class ApiWatch:
    """Polls our API (a run, and /readyz) in the background; collects every status code."""

    def __init__(self, api: httpx.Client, run_ids: list[str]) -> None:
        self.api, self.run_ids = api, run_ids
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "ApiWatch":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            for path in [f"/runs/{i}" for i in self.run_ids] + ["/readyz"]:
                try:
                    self.statuses[self.api.get(path, timeout=30).status_code] += 1
                except httpx.HTTPError:
                    self.statuses[0] += 1  # the API itself away (restarting): no answer


def burst_of_triggers(
    api: httpx.Client, prefect: PrefectApi, load_timeout: float, drain_timeout: float
) -> float:
    """200 concurrent `POST /runs` with distinct Idempotency-Keys plus 50 sharing one: all
    accepted, 201 runs, each run exactly once to Completed. Returns the seconds to drain."""
    body = {"flow": "load-data", "parameters": {"month": "2020-01", "source": "synthetic"}}
    # Loaded once first, so that the burst's runs are quick.
    [first] = wait_final(prefect, [api.post("/runs", json=body).json()["id"]], load_timeout)
    assert first["state"]["type"] == "COMPLETED"

    busy: Counter[int] = Counter()

    def post(key: str) -> httpx.Response:
        # As a well-behaved client: a 503 (Prefect busy) is retried after its Retry-After,
        # a few times; replaying the same key is safe by design.
        for _ in range(3):
            response = api.post("/runs", json=body, headers={"Idempotency-Key": key})
            if response.status_code != 503:
                return response
            busy[503] += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    keys = [f"distinct-{i}" for i in range(200)] + ["shared"] * 50
    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(post, keys))
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: 250}, (statuses, busy)
    ids = {r.json()["id"] for r in responses}
    shared = {r.json()["id"] for key, r in zip(keys, responses, strict=True) if key == "shared"}
    assert len(shared) == 1 and len(ids) == 201

    started = time.monotonic()
    finals = wait_final(prefect, sorted(ids), drain_timeout)
    assert Counter(run["state"]["type"] for run in finals) == {"COMPLETED": 201}
    for run in finals:
        assert run["run_count"] == 1, run
    return time.monotonic() - started
