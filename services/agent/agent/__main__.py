"""`python -m agent`: a Prefect process worker on the pool, configured from AgentSettings, kept
up by a small supervisor.

With AGENT_FORKSERVER (the default) it first starts the fork server (agent.forkserver), so
that runs whose job command is `python -m agent.launch` start warm; see agent.launch. With
AGENT_FORKSERVER_PID it uses the one another process started (make dev's, shared by all its
agents) on AGENT_FORKSERVER_SOCKET.

The worker retries its calls through an outage of the database or the server of about four
minutes (RUN_ENVIRONMENT): when Prefect's worker exits it kills the runs it started. Should
it exit anyway, this process (agent.supervisor) starts it again under the same name, so the
agent stays one process that the autoscaler and Compose see alive.

The worker (agent.worker) starts polling once the fork server is warm. With AGENT_STANDBY
the agent is a standby: warm, but no worker until SIGUSR1 (the autoscaler's promotion).
"""

import signal
import threading

# Before anything slow: SIGUSR1 would end a process that has no handler for it, and the
# autoscaler may promote a standby agent as soon as it exists.
promotion = threading.Event()
if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda *_: promotion.set())

import logging  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from agent.settings import AgentSettings  # noqa: E402
from agent.supervisor import supervise  # noqa: E402
from common.agents import (  # noqa: E402
    ACTIVE,
    FORKSERVER_PID_ENV,
    FORKSERVER_SOCKET_ENV,
    STATE_FILE_ENV,
    read_state,
)
from common.contract import RUN_ENVIRONMENT  # noqa: E402

# Prefect polls every 10 s by default, which dominates trigger-to-running time. With warm
# starts, polling is much of what is left. 1 s costs the server one cheap query a second per
# agent: about 2.5 % of a core more than at 10 s, idle (bench/trigger.py, 2-core machine).
DEFAULT_POLL_SECONDS = "1"


def worker_command(settings: AgentSettings, standby: bool = False) -> list[str]:
    command = [sys.executable, "-m", "agent.worker", *(["--standby"] if standby else []), "--"]
    command += ["worker", "start", "--pool", settings.work_pool_name, "--type", "process"]
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
    if settings.agent_state_file:
        os.environ[STATE_FILE_ENV] = settings.agent_state_file
    if settings.agent_standby and read_state(settings.agent_state_file) == ACTIVE:
        # A promoted agent's container restarted in place: it keeps its environment, but it
        # is an agent now (the state file lives in the container, across restarts).
        logging.getLogger("agent").info("promoted before this restart: no longer a standby")
        promotion.set()
    if settings.agent_forkserver:
        # Launchers find the server through the runs' environment, which the worker
        # passes on from its own.
        os.environ[FORKSERVER_SOCKET_ENV] = settings.agent_forkserver_socket
        if settings.agent_forkserver_pid is None:
            # The worker waits for it to listen before it polls. It exits once this process
            # is gone and its runs are done.
            forkserver = subprocess.Popen(forkserver_command(settings))
            os.environ[FORKSERVER_PID_ENV] = str(forkserver.pid)
        # Else a shared one (make dev's), whose pid is in our environment already: a standby
        # or an extra agent then costs its worker, not another preloaded interpreter.
    else:
        os.environ.pop(FORKSERVER_SOCKET_ENV, None)

    stop = threading.Event()
    current: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        # A standby until promoted; a worker restarted after the promotion starts at once.
        standby = settings.agent_standby and not promotion.is_set()
        worker = subprocess.Popen(
            worker_command(settings, standby), stdin=subprocess.PIPE if standby else None
        )
        current[:] = [worker]
        if standby and promotion.is_set():  # promoted while the line above ran
            promote(worker)
        if stop.is_set():  # a stop signal came before this worker existed
            worker.send_signal(signal.SIGTERM)
        return worker

    def promote(worker: subprocess.Popen) -> None:
        if worker.stdin is not None and not worker.stdin.closed:
            try:
                worker.stdin.write(b"\n")
                worker.stdin.close()
            except OSError:
                pass  # the worker has just exited; its restart is not a standby

    def on_promotion(_signum: int, _frame: object) -> None:
        if not promotion.is_set():
            logging.getLogger("agent").info("promoted: the standby worker starts")
        promotion.set()
        for worker in current:
            promote(worker)

    def relay(signum: int, _frame: object) -> None:
        # The worker drains on SIGTERM/SIGINT as it would if it were us.
        stop.set()
        for worker in current:
            if worker.poll() is None:
                worker.send_signal(signum)

    signal.signal(signal.SIGUSR1, on_promotion)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, relay)
    sys.exit(supervise(start, stop, what="worker (runs already started go on)"))


if __name__ == "__main__":
    main()
