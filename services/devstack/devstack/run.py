"""`make run`: start a flow run through the stack's API and wait for it, with progress.

Works against both stacks: it reads `.env` (python-dotenv, so cron values with spaces are
fine) beneath the environment, calls the API at `API_PUBLIC_URL`, else through the Compose
stack's front door (`GATEWAY_PUBLIC_URL`/api, by default https://127.0.0.1:8443/api, trusting
the door's certificate, TLS_CERT_FILE or certs/gateway.crt) when it answers, else `make dev`'s
API on 127.0.0.1 at `API_PORT`; it sends `API_KEY` only when one is set (`make dev`
without a key runs the API in insecure dev mode). `FLOW` (default train-model), `PARAMS`
(a JSON object) and, for train-model, `DATE` say what to run. Exit status: 0 when the run
completed, 1 when it ended otherwise or could not be started, 2 for bad arguments.
"""

import json
import os
import ssl
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import httpx
from dotenv import dotenv_values

from common.contract import TRAIN_MODEL

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
POLL_SECONDS = 1.0
# Longest wait; Ctrl-C stops waiting sooner (the run goes on either way).
WAIT_SECONDS = 3600.0


class UsageError(ValueError):
    """FLOW, PARAMS or DATE that cannot make a request."""


def settings(environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> dict[str, str]:
    """The environment over `.env`, as every service reads them."""
    merged = {k: v for k, v in dotenv.items() if v is not None}
    merged.update(environ)
    return merged


DEFAULT_DOOR = "https://127.0.0.1:8443"
DEFAULT_CERT = "certs/gateway.crt"


def tls_context(env: Mapping[str, str]) -> ssl.SSLContext:
    """The system's CAs, and the door's certificate when there is one (self-signed by
    `make env`: TLS_CERT_FILE, else certs/gateway.crt)."""
    context = ssl.create_default_context()
    certificate = Path(env.get("TLS_CERT_FILE") or DEFAULT_CERT)
    if certificate.is_file():
        context.load_verify_locations(cafile=str(certificate))
    return context


def api_urls(env: Mapping[str, str]) -> list[str]:
    """Where the API may be, in the order to try: API_PUBLIC_URL alone when set; else the
    front door's /api (Compose), then make dev's API on loopback."""
    if env.get("API_PUBLIC_URL"):
        return [env["API_PUBLIC_URL"].rstrip("/")]
    door = (env.get("GATEWAY_PUBLIC_URL") or DEFAULT_DOOR).rstrip("/")
    return [f"{door}/api", f"http://127.0.0.1:{env.get('API_PORT') or 8000}"]


def api_url(env: Mapping[str, str], answers: Callable[[str], bool]) -> str:
    """The first of api_urls whose /healthz `answers`; the last one when none does (its
    error then says where the API was looked for)."""
    urls = api_urls(env)
    return next((url for url in urls[:-1] if answers(url)), urls[-1])


def run_request(env: Mapping[str, str]) -> dict[str, object]:
    """The body of POST /runs from FLOW, PARAMS and DATE."""
    flow = env.get("FLOW") or TRAIN_MODEL
    try:
        parameters = json.loads(env.get("PARAMS") or "{}")
    except json.JSONDecodeError as error:
        raise UsageError(f"PARAMS is not JSON: {error}") from None
    if not isinstance(parameters, dict):
        raise UsageError('PARAMS must be a JSON object, like PARAMS=\'{"date": "2021-08-15"}\'')
    if flow == TRAIN_MODEL and env.get("DATE") and "date" not in parameters:
        parameters["date"] = env["DATE"]
    return {"flow": flow, "parameters": parameters}


def follow(
    client: httpx.Client,
    run_id: str,
    timeout: float,
    say: Callable[[str], None],
    sleep: Callable[[float], None] = time.sleep,
) -> dict:
    """Poll the run until it is final (or `timeout` seconds), saying each state change."""
    deadline, last = time.monotonic() + timeout, None
    while True:
        response = client.get(f"/runs/{run_id}")
        response.raise_for_status()
        run = response.json()
        state = run["state"]
        if state["name"] != last:
            last = state["name"]
            say(f"  {time.strftime('%H:%M:%S')}  {last}")
        if state["type"] in FINAL or time.monotonic() > deadline:
            return run
        sleep(POLL_SECONDS)


def main() -> int:
    env = settings(os.environ, dotenv_values(".env"))
    try:
        body = run_request(env)
    except UsageError as error:
        print(f"make run: {error}", file=sys.stderr)
        return 2
    key = env.get("API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    timeout = WAIT_SECONDS
    verify = tls_context(env)

    def answers(url: str) -> bool:
        try:
            return httpx.get(f"{url}/healthz", verify=verify, timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    base_url = api_url(env, answers)
    with httpx.Client(base_url=base_url, headers=headers, verify=verify, timeout=30) as client:
        try:
            response = client.post("/runs", json=body)
        except httpx.HTTPError as error:
            print(
                f"make run: the API at {client.base_url} did not answer: {error}", file=sys.stderr
            )
            return 1
        if response.status_code != 202:
            print(f"make run: HTTP {response.status_code}: {response.text}", file=sys.stderr)
            return 1
        run = response.json()
        print(f"started {run['flow']} run {run['name']} ({run['id']})")
        if run["links"].get("ui"):
            print(f"  Prefect UI: {run['links']['ui']}")
        try:
            run = follow(client, run["id"], timeout, print)
        except KeyboardInterrupt:
            print("stopped waiting; the run goes on (GET /runs/{id} follows it)")
            return 1
    if run["state"]["type"] not in FINAL:
        print(f"still {run['state']['name']} after {timeout:.0f} s; the run goes on")
        return 1
    for name, value in (run.get("metrics") or {}).items():
        print(f"  {name}: {value}")
    if run.get("error"):
        print(f"  error: {run['error']}")
    return 0 if run["state"]["type"] == "COMPLETED" else 1


if __name__ == "__main__":
    sys.exit(main())
