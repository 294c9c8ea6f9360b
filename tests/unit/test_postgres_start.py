"""devstack.postgres: pg_ctl's 10 s running out on a busy machine is waited through (the
server it launched comes up), not a failed start; a server that never comes is a clear
TimeoutError. The embedded server itself starts in every integration test."""

import os
import subprocess
import threading
from pathlib import Path

import pytest

from devstack.postgres import EmbeddedPostgres


def _server_in(pgdata: Path) -> EmbeddedPostgres:
    server = object.__new__(EmbeddedPostgres)  # not started: only _patiently is tried
    server.pgdata = pgdata
    return server


def _postmaster_pid(pgdata: Path, status: str) -> None:
    """A postmaster.pid as PostgreSQL writes it; the pid is this (running) process."""
    lines = [str(os.getpid()), str(pgdata), "1796032999", "5432", str(pgdata), "", "1 2", status]
    (pgdata / "postmaster.pid").write_text("\n".join(lines) + "\n")


def test_a_start_that_outlasts_pg_ctl_s_timeout_waits_for_the_server(tmp_path: Path) -> None:
    calls: list[str] = []

    def start() -> str:
        calls.append("start")
        if len(calls) == 1:
            # The server comes up after pg_ctl gave up, as it did under load.
            threading.Timer(0.3, _postmaster_pid, (tmp_path, "ready")).start()
            raise subprocess.TimeoutExpired(["pg_ctl", "start"], 10)
        return "running"

    assert _server_in(tmp_path)._patiently(start, timeout=10) == "running"
    assert calls == ["start", "start"]


def test_a_server_that_never_gets_ready_is_a_timeout_naming_it(tmp_path: Path) -> None:
    _postmaster_pid(tmp_path, "starting")

    def start() -> None:
        raise subprocess.TimeoutExpired(["pg_ctl", "start"], 10)

    with pytest.raises(TimeoutError, match=f"PostgreSQL in {tmp_path} not ready after 1 s"):
        _server_in(tmp_path)._patiently(start, timeout=1)
