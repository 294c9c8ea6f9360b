"""The agent's healthcheck (agent.health): a warm standby, or a worker that answers; while the
container starts, it waits for the worker rather than failing at once."""

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from common.agents import ACTIVE, STANDBY, write_state


def _nothing_listens(monkeypatch: pytest.MonkeyPatch, closed: socket.socket) -> int:
    from agent import health

    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    monkeypatch.setattr(health, "WORKER_HEALTH", ("127.0.0.1", port, "/health"))
    return port


def test_health_is_a_warm_standby_or_a_worker_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import health

    path = tmp_path / "agent.state"
    monkeypatch.setenv("AGENT_STATE_FILE", str(path))
    monkeypatch.setattr(health, "uptime", lambda: health.STARTING_SECONDS + 1)  # started
    with socket.socket() as closed:  # a port that nothing listens on
        _nothing_listens(monkeypatch, closed)
        began = time.monotonic()
        assert health.main() == 1  # still warming: no state yet, no worker
        assert time.monotonic() - began < 1  # one attempt, once started
        write_state(str(path), STANDBY)
        assert health.main() == 0
        write_state(str(path), ACTIVE)
        assert health.main() == 1  # promoted, and its worker does not answer


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_while_starting_a_check_waits_for_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import health

    monkeypatch.setenv("AGENT_STATE_FILE", str(tmp_path / "agent.state"))
    monkeypatch.setattr(health, "uptime", lambda: 3.0)  # the container started 3 s ago
    with socket.socket() as closed:
        port = _nothing_listens(monkeypatch, closed)
    # The worker's webserver comes up 1 s into the check, on the port nothing listened on.
    server = http.server.HTTPServer(("127.0.0.1", port), _Health, bind_and_activate=False)
    server.allow_reuse_address = True

    def serve_later() -> None:
        time.sleep(1.0)
        server.server_bind()
        server.server_activate()
        server.serve_forever(poll_interval=0.05)

    worker = threading.Thread(target=serve_later, daemon=True)
    worker.start()
    began = time.monotonic()
    try:
        assert health.main() == 0
        assert 0.9 < time.monotonic() - began < 1 + 3 * health.RETRY_SECONDS
    finally:
        if worker.is_alive():  # serving, or about to: shutdown waits for its loop
            server.shutdown()
        worker.join(5)
        server.server_close()
    # Still starting, and the worker never comes: the check fails at WAIT_SECONDS.
    monkeypatch.setattr(health, "WAIT_SECONDS", 0.5)
    began = time.monotonic()
    assert health.main() == 1
    assert 0.4 < time.monotonic() - began < 2


def test_uptime_is_the_process_s_age() -> None:
    from agent.health import uptime

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        time.sleep(0.3)
        assert 0.2 <= uptime(child.pid) < 3
    finally:
        child.kill()
        child.wait()
    assert uptime(os.getpid()) > 0
    assert uptime(2**22 + 1) == float("inf")  # above Linux's largest pid: no such process


def test_a_worker_that_answers_other_than_200_is_not_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import health

    monkeypatch.setenv("AGENT_STATE_FILE", str(tmp_path / "agent.state"))
    monkeypatch.setattr(health, "uptime", lambda: health.STARTING_SECONDS + 1)
    unhealthy = type("Unhealthy", (_Health,), {"status": 503})
    for handler, verdict in ((_Health, 0), (unhealthy, 1)):
        with http.server.HTTPServer(("127.0.0.1", 0), handler) as server:
            port = server.server_address[1]
            monkeypatch.setattr(health, "WORKER_HEALTH", ("127.0.0.1", port, "/health"))
            serving = threading.Thread(target=server.serve_forever, daemon=True)
            serving.start()
            try:
                assert health.main() == verdict, handler
            finally:
                server.shutdown()
