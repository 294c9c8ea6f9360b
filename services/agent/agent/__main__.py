"""`python -m agent`: a Prefect process worker on the pool, configured from AgentSettings, kept
up by a small supervisor.

With AGENT_FORKSERVER (the default) it first starts the fork server (agent.forkserver), so
that runs whose job command is `python -m agent.launch` start warm; see agent.launch.

The worker retries its calls through an outage of the database or the server of about four
minutes (RUN_ENVIRONMENT): when Prefect's worker exits it kills the runs it started. Should
it exit anyway, this process (agent.supervisor) starts it again under the same name, so the
agent stays one process that the autoscaler and Compose see alive.
"""

import logging
import os
import signal
import subprocess
import sys
import threading

from agent.launch import SOCKET_ENV
from agent.settings import AgentSettings
from agent.supervisor import supervise
from trainer.settings import RUN_ENVIRONMENT

# Prefect polls every 10 s by default, which dominates trigger-to-running time. With warm
# starts, polling is much of what is left. 1 s costs the server one cheap query a second per
# agent: about 2.5 % of a core more than at 10 s, idle (bench/trigger.py, 2-core machine).
DEFAULT_POLL_SECONDS = "1"


def worker_command(settings: AgentSettings) -> list[str]:
    command = ["prefect", "worker", "start", "--pool", settings.work_pool_name, "--type", "process"]
    command += ["--name", settings.agent_name]
    if settings.agent_limit is not None:
        command += ["--limit", str(settings.agent_limit)]
    if settings.agent_healthcheck:
        command.append("--with-healthcheck")
    return command


def forkserver_command(settings: AgentSettings) -> list[str]:
    return [sys.executable, "-m", "agent.forkserver", "--socket", settings.agent_forkserver_socket]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = AgentSettings()
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_POLL_SECONDS)
    # Ride out an outage of the database or the server instead of exiting: when Prefect's
    # worker exits it kills the runs it started. The runs get the same settings (the worker
    # hands its own to them, over the deployments' job variables).
    for name, value in RUN_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if settings.agent_forkserver:
        # Launchers find the server through the runs' environment, which the worker
        # passes on from its own.
        os.environ[SOCKET_ENV] = settings.agent_forkserver_socket
        # Not waited for: it imports while the worker starts, and a run that comes before
        # it listens starts cold. It exits once this process is gone and its runs are done.
        subprocess.Popen(forkserver_command(settings))
    else:
        os.environ.pop(SOCKET_ENV, None)

    stop = threading.Event()
    current: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        worker = subprocess.Popen(worker_command(settings))
        current[:] = [worker]
        if stop.is_set():  # a stop signal came before this worker existed
            worker.send_signal(signal.SIGTERM)
        return worker

    def relay(signum: int, _frame: object) -> None:
        # The worker drains on SIGTERM/SIGINT as it would if it were us.
        stop.set()
        for worker in current:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, relay)
    sys.exit(supervise(start, stop, what="worker (runs already started go on)"))


if __name__ == "__main__":
    main()
