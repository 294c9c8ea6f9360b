"""What fault tests share, in local mode and in Compose: waiting for runs through an outage,
watching our API through it, and a burst of triggers."""

import http.server
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

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


# How soon after the database is back a run that was in its body during the outage is final
# (it ends 25 s after it began: during a 100 s outage, or 5 s after a 20 s one). The engine
# asks every 2 s (agent.outages); without that it slept in Prefect's back-off, and a run that
# ended 25 s into a 100 s outage was final 42 to 55 s after the database returned.
FINAL_AFTER_OUTAGE_SECONDS = 20
# What the probe logs as its body begins: past RUNNING, the engine still reads the run before
# it calls the flow, and an outage that begins before that read holds the body back by the
# outage's length.
PROBE_BODY_LOG = "probe: holding this agent"


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


# The burst: BURST_DISTINCT concurrent `POST /runs` with keys of their own, then BURST_SHARED
# racing on one key. It was 200 + 50: its 201 runs took 3.5 min to drain on 2 cores, in the
# fault suite and again in Compose, each run costing about 1.2 s of CPU (engine and server).
# 50 + 50 proves the same: the client's 50 threads put 50 requests in flight at once either
# way (the most there ever were), 50 still race on the shared key, and the 51 runs are 12
# times the local fault stack's 4 slots (6 to 8 in Compose), so agents still compete for a
# backlog over many polls, and every run is checked to have run once.
BURST_DISTINCT, BURST_SHARED = 50, 50
BURST_CLIENTS = 50
BURST_TIMEOUT = 90.0  # seconds a trigger of the burst waits for its answer, each attempt
BURST_ATTEMPTS = 4  # a trigger's attempts in all: it is sent again after a timeout or a 503
BURST_SUMMARY = (
    f"{BURST_DISTINCT + BURST_SHARED} triggers ({BURST_SHARED} sharing a key), "
    f"{BURST_DISTINCT + 1} runs"
)


@dataclass(frozen=True)
class Burst:
    """What a burst of triggers took: seconds until every trigger was accepted, the slowest
    trigger's seconds (its retries included), the retries by cause, and seconds to drain."""

    accepted: float
    slowest: float
    retried: Counter[str]
    drained: float

    def __str__(self) -> str:
        retried = ", ".join(f"{n} after {cause}" for cause, n in sorted(self.retried.items()))
        return (
            f"{BURST_SUMMARY}: accepted in {self.accepted:.1f} s (slowest trigger "
            f"{self.slowest:.1f} s; retried: {retried or 'none'}), drained in {self.drained:.1f} s"
        )


def burst_of_triggers(
    api: httpx.Client, prefect: PrefectApi, load_timeout: float, drain_timeout: float
) -> Burst:
    """BURST_DISTINCT concurrent `POST /runs` with distinct Idempotency-Keys plus
    BURST_SHARED sharing one: all accepted, BURST_DISTINCT + 1 runs, each run exactly once to
    Completed."""
    body = {"flow": "load-data", "parameters": {"month": "2020-01", "source": "synthetic"}}
    # Loaded once first, so that the burst's runs are quick.
    [first] = wait_final(prefect, [api.post("/runs", json=body).json()["id"]], load_timeout)
    assert first["state"]["type"] == "COMPLETED"

    def post(key: str) -> tuple[httpx.Response, float, list[str]]:
        # As a well-behaved client: a 503 (Prefect busy) is retried after its Retry-After, and
        # a request with no answer within its timeout is sent again, a few times; replaying
        # the same key is safe by design, and the run counts below prove it. On 2 busy cores a
        # trigger has waited over 60 s behind the burst's 99 others: the timeout is longer
        # than the client's usual 30 s, as each retry adds a request to the backlog.
        sent, retries = time.monotonic(), []
        for attempt in range(1, BURST_ATTEMPTS + 1):
            try:
                response = api.post(
                    "/runs", json=body, headers={"Idempotency-Key": key}, timeout=BURST_TIMEOUT
                )
            except httpx.TimeoutException:
                if attempt == BURST_ATTEMPTS:
                    raise
                retries.append("a timeout")
                continue
            if response.status_code != 503 or attempt == BURST_ATTEMPTS:
                break
            retries.append("a 503")
            time.sleep(float(response.headers.get("Retry-After", "1")))
        return response, time.monotonic() - sent, retries

    keys = [f"distinct-{i}" for i in range(BURST_DISTINCT)] + ["shared"] * BURST_SHARED
    started = time.monotonic()
    with ThreadPoolExecutor(BURST_CLIENTS) as pool:
        answers = list(pool.map(post, keys))
    accepted = time.monotonic() - started
    responses = [response for response, _, _ in answers]
    # Counted from each trigger's own list: the 50 threads share no counter.
    retried = Counter(cause for _, _, retries in answers for cause in retries)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {202: len(keys)}, (statuses, retried)
    ids = {r.json()["id"] for r in responses}
    shared = {r.json()["id"] for key, r in zip(keys, responses, strict=True) if key == "shared"}
    assert len(shared) == 1 and len(ids) == BURST_DISTINCT + 1

    started = time.monotonic()
    finals = wait_final(prefect, sorted(ids), drain_timeout)
    assert Counter(run["state"]["type"] for run in finals) == {"COMPLETED": len(ids)}
    for run in finals:
        assert run["run_count"] == 1, run
    slowest = max(seconds for _, seconds, _ in answers)
    return Burst(accepted, slowest, retried, time.monotonic() - started)


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of a real server, that answers the next `times`
    requests whose path ends with `suffix` with `status` itself, and forwards the rest.

    For a fault at one exact step (Prefect refusing or failing to create a run) where
    stopping the real server would break every other step too.
    """

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.faults: list[tuple[str, int, bytes]] = []
        self.forwarded: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, content = proxy._fault(self.path)
                if status is None:
                    status, content = proxy._forward(self.command, self.path, body, self.headers)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._client = httpx.Client(timeout=30)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, suffix: str, status: int, times: int = 1, detail: str = "injected") -> None:
        body = json.dumps({"detail": detail}).encode()
        with self._lock:
            self.faults += [(suffix, status, body)] * times

    def _fault(self, path: str) -> tuple[int | None, bytes]:
        with self._lock:
            for i, (suffix, status, body) in enumerate(self.faults):
                if path.split("?")[0].endswith(suffix):
                    del self.faults[i]
                    return status, body
        return None, b""

    def _forward(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, bytes]:
        self.forwarded[path.split("?")[0]] += 1
        kept = {k: v for k, v in headers.items() if k.lower() in ("content-type", "accept")}
        response = self._client.request(method, self.target + path, content=body, headers=kept)
        return response.status_code, response.content

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._client.close()
