"""The agent's worker restarts (agent.supervisor): growing delays, and the restart loop."""

import subprocess
import sys
import threading

from agent.supervisor import supervise
from common.restarts import (
    FIRST_RESTART_SECONDS,
    MAX_RESTART_SECONDS,
    STABLE_SECONDS,
    next_restart_delay,
)


def test_restart_delays_grow_and_reset_after_a_stable_run() -> None:
    delays = [None]
    for _ in range(6):
        delays.append(next_restart_delay(delays[-1], uptime=1))
    assert delays[1:] == [FIRST_RESTART_SECONDS, 2, 4, 8, 8, 8]
    assert delays[-1] == MAX_RESTART_SECONDS
    assert next_restart_delay(8, uptime=STABLE_SECONDS) == FIRST_RESTART_SECONDS


def test_the_supervisor_restarts_a_worker_that_exits_until_stopped() -> None:
    stop = threading.Event()
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        started.append(subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"]))
        if len(started) == 3:
            stop.set()  # as a SIGTERM relayed to the third worker would
        return started[-1]

    assert supervise(start, stop, what="test") == 3
    assert len(started) == 3
