"""`make dev` itself (`python -m devstack`): a service that dies is restarted; Ctrl-C stops
everything within the grace period, and so do two or three stop signals in quick succession;
what a killed `make dev` left behind is stopped by the next one."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from devstack.stack import REPO, free_port, wait_until
from testkit import makedev

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


def _env(tmp_path: Path, port: int, api_port: int) -> dict[str, str]:
    return makedev.environment(
        tmp_path / "var",
        port=port,
        api_port=api_port,
        WORK_POOL_NAME="make-dev",
        SYNTHETIC_ROWS="2000",
    )


def _start(tmp_path: Path, env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    """`make dev`, once its banner is out."""
    output = tmp_path / log_name
    with output.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: makedev.HEADLINE in output.read_text(errors="replace"), 180, "make dev")
    except BaseException:
        process.kill()
        raise
    return process


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_make_dev_restarts_a_dead_service_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    port, api_port = free_port(), free_port()
    env = _env(tmp_path, port, api_port)
    process = _start(tmp_path, env, "make-dev.log")
    devstack = psutil.Process(process.pid)
    try:
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

        # Ctrl-C, then a second stop signal while it stops (a person pressing twice): the
        # second must not cut the stop short and leave the services running.
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        time.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_LIMIT_SECONDS) == 0
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    output = (tmp_path / "make-dev.log").read_text(errors="replace")
    assert "api exited (code -9)" in output and "restarting it in 1 s" in output
    assert "stopping, please wait" in output
    assert _alive(descendants) == []
    assert _port_free(port) and _port_free(api_port)
    print(f"make dev stopped in {stopped_in:.1f} s")


def test_leftovers_of_a_killed_make_dev_are_stopped_and_three_signals_kill_all(
    tmp_path: Path,
) -> None:
    port, api_port = free_port(), free_port()
    env = _env(tmp_path, port, api_port)
    first = _start(tmp_path, env, "first.log")
    orphans = psutil.Process(first.pid).children(recursive=True)
    first.kill()  # make dev itself killed: its services run on, with parent 1
    first.wait()
    assert len(_alive(orphans)) >= 5 and not _port_free(port)

    second = _start(tmp_path, env, "second.log")
    try:
        output = (tmp_path / "second.log").read_text(errors="replace")
        assert "that an earlier make dev left running" in output
        assert _alive(orphans) == []
        descendants = psutil.Process(second.pid).children(recursive=True)
        for _ in range(3):  # impatient: three signals at once
            second.send_signal(signal.SIGINT)
            time.sleep(0.2)
        second.wait(STOP_LIMIT_SECONDS)
    finally:
        if second.poll() is None:
            second.kill()
    output = (tmp_path / "second.log").read_text(errors="replace")
    assert "killing every process of the stack" in output
    assert _alive(descendants) == []
    wait_until(lambda: _port_free(port) and _port_free(api_port), 10, "the ports to be free")
