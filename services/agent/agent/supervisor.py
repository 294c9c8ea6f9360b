"""Keep a process up: restart it when it exits, after a delay that grows while it keeps failing.

The agent keeps its Prefect worker up with `supervise`; local mode (devstack) restarts the
stack's services with the same delays.
"""

import logging
import subprocess
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("agent")

# Short, so that a service is back within seconds of what it needs; growing, so that one
# that cannot start does not spin. Reset once it has stayed up a while.
FIRST_RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 8.0
STABLE_SECONDS = 60.0


def next_restart_delay(previous: float | None, uptime: float) -> float:
    """The wait before restarting a process that ran for `uptime` s; `previous`: the last wait."""
    if previous is None or uptime >= STABLE_SECONDS:
        return FIRST_RESTART_SECONDS
    return min(previous * 2, MAX_RESTART_SECONDS)


def supervise(start: Callable[[], subprocess.Popen], stop: threading.Event, what: str) -> int:
    """Run the process from `start` until `stop` is set; restart it whenever it exits before.

    Returns the exit code of the last one. The caller relays stop signals to it.
    """
    delay: float | None = None
    while True:
        began = time.monotonic()
        code = start().wait()
        if stop.is_set():
            return code
        uptime = time.monotonic() - began
        delay = next_restart_delay(delay, uptime)
        logger.warning(
            "%s exited (code %s) after %.0f s; restarting it in %.0f s", what, code, uptime, delay
        )
        if stop.wait(delay):
            return code
