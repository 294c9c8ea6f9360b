"""`python -m agent.health`: the agent container's healthcheck.

Healthy: a standby agent that is warm and waiting (its state file, AGENT_STATE_FILE, says
`standby`), or an agent whose worker answers GET :8080/health (the worker's webserver,
AGENT_HEALTHCHECK). Standard library only: it runs every 5 s in every agent container.

Docker runs the first check one interval after the container starts, and each next one an
interval after the last ended: a worker up 6 s after the start was reported healthy at 10 s,
and `docker compose up --wait` returned only then. So while the container is starting (its
first STARTING_SECONDS, the image's start period), a check waits up to WAIT_SECONDS for the
worker instead of failing at once; later, one attempt decides. (Docker Engine 25's
`start_interval` would check often while starting; older engines refuse it.)
"""

import os
import sys
import time
import urllib.request

from common.agents import STANDBY, STATE_FILE_ENV, read_state

WORKER_HEALTH_URL = "http://127.0.0.1:8080/health"
STARTING_SECONDS = 60.0  # the Dockerfile's --start-period
WAIT_SECONDS = 20.0  # under the Dockerfile's --timeout
RETRY_SECONDS = 0.2


def uptime(pid: int = 1) -> float:
    """Seconds since process `pid` started: in a container, PID 1 is the container's own
    (Linux /proc; infinite where it cannot be read, as if long started)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22, after the command in parentheses (which may hold spaces).
            started_ticks = int(stat.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as boot:
            since_boot = float(boot.read().split()[0])
    except (OSError, ValueError, IndexError):
        return float("inf")
    return since_boot - started_ticks / os.sysconf("SC_CLK_TCK")


def healthy(wait_seconds: float) -> str | None:
    """None when healthy within `wait_seconds` (0: one attempt), else why not."""
    deadline = time.monotonic() + wait_seconds
    while True:
        if read_state(os.environ.get(STATE_FILE_ENV)) == STANDBY:
            return None
        try:
            urllib.request.urlopen(WORKER_HEALTH_URL, timeout=3).close()
            return None
        except OSError as exc:
            if time.monotonic() + RETRY_SECONDS > deadline:
                return f"worker not healthy at {WORKER_HEALTH_URL}: {exc}"
        time.sleep(RETRY_SECONDS)


def main() -> int:
    starting = uptime() < STARTING_SECONDS
    problem = healthy(WAIT_SECONDS if starting else 0.0)
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
