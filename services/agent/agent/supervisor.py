"""Keep a process up: restart it when it exits, after a delay that grows while it keeps failing.

The agent keeps its Prefect worker up with `supervise`; the delays are common.restarts', which
local mode (devstack) restarts the stack's services with too.
"""

import logging
import subprocess
import threading
import time
from collections.abc import Callable

from common.restarts import next_restart_delay

logger = logging.getLogger("agent")


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
