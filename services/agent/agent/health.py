"""`python -m agent.health`: the agent container's healthcheck.

Healthy: a standby agent that is warm and waiting (its state file, AGENT_STATE_FILE, says
`standby`), or an agent whose worker answers GET :8080/health (the worker's webserver,
AGENT_HEALTHCHECK). Standard library only: it runs every 5 s in every agent container.
"""

import os
import sys
import urllib.request

from common.agents import STANDBY, STATE_FILE_ENV, read_state

WORKER_HEALTH_URL = "http://127.0.0.1:8080/health"


def main() -> int:
    if read_state(os.environ.get(STATE_FILE_ENV)) == STANDBY:
        return 0
    try:
        urllib.request.urlopen(WORKER_HEALTH_URL, timeout=3).close()
    except OSError as exc:
        print(f"worker not healthy at {WORKER_HEALTH_URL}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
