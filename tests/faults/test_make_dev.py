"""`make dev` itself (`python -m devstack`): a service that dies is restarted, and Ctrl-C still
stops everything, within the grace period."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devstack.stack import REPO, free_port, wait_until

pytestmark = pytest.mark.faults
# make dev gives each service 20 s after SIGTERM; the agents go with the autoscaler.
STOP_LIMIT_SECONDS = 60


def _service(devstack: psutil.Process, module: str) -> psutil.Process | None:
    for child in devstack.children():
        try:
            if child.cmdline()[-2:] == ["-m", module]:
                return child
        except psutil.Error:
            continue
    return None


def test_make_dev_restarts_a_dead_service_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            str(REPO / "services" / name) for name in ("trainer", "agent", "api", "devstack")
        ),
        "STATE_DIR": str(tmp_path / "var"),
        "PREFECT_SERVER_API_PORT": str(port),
        "API_PORT": str(api_port),
        "MLFLOW_SERVER_PORT": str(free_port()),
        "SERVING_PORT": str(free_port()),
        "AUTOSCALER_METRICS_PORT": str(free_port()),
        "WORK_POOL_NAME": "make-dev",
        "SYNTHETIC_ROWS": "2000",
    }
    log = (tmp_path / "make-dev.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    devstack = psutil.Process(process.pid)
    try:
        output = tmp_path / "make-dev.log"
        wait_until(
            lambda: "Local stack is up" in output.read_text(errors="replace"), 180, "make dev"
        )
        api = _service(devstack, "api")
        assert api is not None
        api.kill()
        wait_until(
            lambda: (new := _service(devstack, "api")) is not None and new.pid != api.pid,
            30,
            "the API to be restarted",
        )
        ready = f"http://127.0.0.1:{api_port}/readyz"
        wait_until(lambda: httpx.get(ready, timeout=5).status_code == 200, 90, "the API back")
        descendants = devstack.children(recursive=True)
        # server, MLflow and its workers, autoscaler, an agent and its worker, the API
        assert len(descendants) >= 7

        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        assert process.wait(STOP_LIMIT_SECONDS) == 0
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "make-dev.log").read_text(errors="replace")
    assert "api exited (code -9)" in output and "restarting it in 1 s" in output
    assert [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    print(f"make dev stopped in {stopped_in:.1f} s")
