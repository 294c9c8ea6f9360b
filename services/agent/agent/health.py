"""`python -m agent.health`: the agent container's healthcheck.

Healthy: a standby agent that is warm and waiting (its state file, AGENT_STATE_FILE, says
`standby`), or an agent whose worker answers GET :8080/health (the worker's webserver,
AGENT_HEALTHCHECK). It runs every 5 s in every agent container, standby ones too: standard
library only, and a plain socket rather than urllib, whose imports (ssl, email, http.client)
cost 50 ms of CPU a check (the other images check with services/build/http-ok).

Docker runs the first check one interval after the container starts, and each next one an
interval after the last ended: a worker up 6 s after the start was reported healthy at 10 s,
and `docker compose up --wait` returned only then. So while the container is starting (its
first STARTING_SECONDS, the image's start period), a check waits up to WAIT_SECONDS for the
worker instead of failing at once; later, one attempt decides. (Docker Engine 25's
`start_interval` would check often while starting; older engines refuse it.)
"""

import os
import socket
import sys
import time

from common.agents import STANDBY, STATE_FILE_ENV, read_state

WORKER_HEALTH = ("127.0.0.1", 8080, "/health")
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


def worker_status() -> str:
    """The status line of GET /health on the worker's webserver (WORKER_HEALTH); OSError
    when nothing answers within 3 s."""
    host, port, path = WORKER_HEALTH
    with socket.create_connection((host, port), timeout=3) as connection:
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        connection.sendall(request.encode())
        with connection.makefile("rb") as answer:
            return answer.readline(200).decode("latin-1").strip()


def healthy(wait_seconds: float) -> str | None:
    """None when healthy within `wait_seconds` (0: one attempt), else why not."""
    deadline = time.monotonic() + wait_seconds
    while True:
        if read_state(os.environ.get(STATE_FILE_ENV)) == STANDBY:
            return None
        try:
            status = worker_status()
        except OSError as exc:
            status = str(exc)
        if status.startswith(("HTTP/1.1 200", "HTTP/1.0 200")):
            return None
        if time.monotonic() + RETRY_SECONDS > deadline:
            host, port, path = WORKER_HEALTH
            return f"worker not healthy at {host}:{port}{path}: {status or 'no answer'}"
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
