"""The teammate's laptop: what tests/e2e/test_door.py runs in a throwaway python:3.11-slim
container on a network of its own, which only the door (the gateway container, alias
`gateway`) shares. Standard library only.

Input: the environment variable TEAMMATE, JSON:
    {"door": "https://gateway:8443", "cafile": "/door.crt",
     "viewer": "<key>", "operator": "<key>", "admin": "<key>",
     "deployment": "<Prefect deployment id>", "model": "<registered model>",
     "internal": [["server", 4200], ["172.18.0.5", 4200], ...]}
Output: one JSON object on stdout (what each request answered; see `main`). It asserts
nothing: the test does, so that a failure shows every answer at once.
"""

import concurrent.futures
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

TIMEOUT = 30.0
# A revoked key is polled this long (seconds) at most; the promise is 1 s.
REVOKE_WATCH_SECONDS = 5.0
REVOKE_POLL_SECONDS = 0.05
CONNECT_TIMEOUT = 3.0


class Door:
    """Requests to the door, trusting only the run's certificate; the host name is checked
    (the certificate names `gateway`)."""

    def __init__(self, base: str, cafile: str) -> None:
        self.base = base.rstrip("/")
        self.tls = ssl.create_default_context(cafile=cafile)

    def call(
        self,
        method: str,
        path: str,
        key: str | None = None,
        body: Any = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """{"status": int, "request_id": str | None, "body": parsed JSON or text (≤ 2000
        characters)}; an HTTP error status is an answer, not an exception."""
        headers = {"Accept": "application/json"}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.tls) as response:
                status, raw, answer_id = (
                    response.status,
                    response.read(),
                    response.headers.get("X-Request-ID"),
                )
        except urllib.error.HTTPError as error:
            status, raw, answer_id = error.code, error.read(), error.headers.get("X-Request-ID")
        text = raw.decode(errors="replace")
        try:
            parsed: Any = json.loads(text) if text else None
        except ValueError:
            parsed = text[:2000]
        return {"status": status, "request_id": answer_id, "body": parsed}


def _request_id() -> str:
    return f"teammate-{uuid.uuid4().hex}"


def anonymous(door: Door) -> dict[str, Any]:
    """Without credentials: the protected paths, then the health paths."""
    protected = {
        "prefect": ("POST", "/prefect/api/flow_runs/filter", {"limit": 1}),
        "mlflow": ("POST", "/mlflow/ajax-api/2.0/mlflow/experiments/search", {"max_results": 1}),
        "api": ("GET", "/api/runs", None),
        "serving": ("GET", "/serving/models", None),
    }
    health = [
        "/healthz",
        "/api/healthz",
        "/serving/healthz",
        "/prefect/api/health",
        "/mlflow/health",
    ]
    return {
        "protected": {
            name: door.call(method, path, body=body)["status"]
            for name, (method, path, body) in protected.items()
        },
        "health": {path: door.call("GET", path)["status"] for path in health},
    }


def viewer_writes(door: Door, key: str, deployment: str, model: str) -> dict[str, Any]:
    """A viewer's trigger, Prefect flow-run creation and MLflow alias move: each answer's
    status and request id."""
    writes = {
        "api": ("/api/runs", {"flow": "probe", "parameters": {"seconds": 0}}),
        "prefect": (
            f"/prefect/api/deployments/{deployment}/create_flow_run",
            {"parameters": {"seconds": 0}},
        ),
        "mlflow": (
            "/mlflow/api/2.0/mlflow/registered-models/alias",
            {"name": model, "alias": "teammate", "version": "1"},
        ),
    }
    answers = {}
    for name, (path, body) in writes.items():
        answer = door.call("POST", path, key, body, request_id=_request_id())
        answers[name] = {"status": answer["status"], "request_id": answer["request_id"]}
    return answers


def operator_trigger(door: Door, key: str) -> dict[str, Any]:
    body = {"flow": "probe", "parameters": {"seconds": 0}}
    answer = door.call("POST", "/api/runs", key, body, request_id=_request_id())
    run = answer["body"] if isinstance(answer["body"], dict) else {}
    return {"status": answer["status"], "request_id": answer["request_id"], "run": run.get("id")}


def admin_key_lifecycle(door: Door, admin: str) -> dict[str, Any]:
    """An admin makes a viewer key; it reads (our API, and MLflow, whose verdict only the door
    gives); the admin revokes it; then both reads are polled until refused: seconds from the
    revocation's answer to the first 401 of each."""
    made = door.call(
        "POST",
        "/api/keys",
        admin,
        {"name": f"teammate-{uuid.uuid4().hex[:8]}", "role": "viewer", "owner": "teammate"},
        request_id=_request_id(),
    )
    result: dict[str, Any] = {"create": {"status": made["status"], "id": None}}
    if made["status"] != 201:
        result["create"]["body"] = made["body"]
        return result
    key, key_id = made["body"]["key"], made["body"]["id"]
    result["create"].update(id=key_id, request_id=made["request_id"])
    reads = {
        "api": "/api/runs?limit=1",
        "mlflow": "/mlflow/api/2.0/mlflow/registered-models/search",
    }
    # Twice each: the second is answered from the door's verdict cache, if at all.
    result["works"] = {
        name: [door.call("GET", path, key)["status"] for _ in range(2)]
        for name, path in reads.items()
    }
    revoked = door.call("DELETE", f"/api/keys/{key_id}", admin, request_id=_request_id())
    since = time.monotonic()
    result["revoke"] = {"status": revoked["status"], "request_id": revoked["request_id"]}
    refused_after: dict[str, float | None] = dict.fromkeys(reads)
    statuses: dict[str, list[int]] = {name: [] for name in reads}
    while time.monotonic() - since < REVOKE_WATCH_SECONDS and None in refused_after.values():
        for name, path in reads.items():
            if refused_after[name] is None:
                status = door.call("GET", path, key)["status"]
                statuses[name].append(status)
                if status == 401:
                    refused_after[name] = time.monotonic() - since
        time.sleep(REVOKE_POLL_SECONDS)
    # Refused for good: once more, a moment later.
    time.sleep(0.2)
    result["refused_after_seconds"] = refused_after
    result["statuses_while_revoking"] = statuses
    result["later"] = {name: door.call("GET", path, key)["status"] for name, path in reads.items()}
    return result


def connect(host: str, port: int) -> str:
    """ "connected", or why not (the exception's class and message)."""
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        return f"{type(error).__name__}: {error}"
    return "connected"


def main() -> None:
    config = json.loads(os.environ["TEAMMATE"])
    door = Door(config["door"], config["cafile"])
    # Every direct attempt at once: an address another network holds times out.
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        attempts = {
            f"{host}:{port}": pool.submit(connect, host, port) for host, port in config["internal"]
        }
        report = {
            "anonymous": anonymous(door),
            "viewer": viewer_writes(door, config["viewer"], config["deployment"], config["model"]),
            "operator": operator_trigger(door, config["operator"]),
            "admin": admin_key_lifecycle(door, config["admin"]),
            "door_by_name": connect("gateway", 8443),
            "internal": {target: attempt.result() for target, attempt in attempts.items()},
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
