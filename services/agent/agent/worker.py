"""`python -m agent.worker [--standby] -- <prefect CLI arguments>`: Prefect's worker, its CLI
run in this process once the agent is warm.

`python -m agent` starts this instead of `prefect worker start`. It imports the worker's
modules, then waits until the agent's fork server listens (or has died, or for at most
FORKSERVER_WAIT_SECONDS): a worker that polls earlier would start its first runs cold, each
importing Prefect and the data stack on a CPU that the fork server is busy importing them on.

With --standby it then waits, costing no CPU, until the agent writes to its standard input
(the autoscaler promotes the agent with SIGUSR1, which the agent relays): a standby agent is
not a worker yet, so Prefect sees nothing and no run can reach it. Promotion then takes the
time of a first poll, not of Prefect's imports.

Once a worker, it polls as soon as a run is scheduled in its pool, not only every
PREFECT_WORKER_QUERY_SECONDS: agent.push, unless AGENT_PUSH is false.

The agent's state goes to AGENT_STATE_FILE when set: `standby` while it waits there, warm,
and `active` once the worker starts. Healthchecks (agent.health) and the autoscaler read it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

from agent import outages, prefect_settings, push, recent_reads, tls
from agent.launch import process_alive
from agent.protocol import listening
from agent.settings import AgentSettings
from common.agents import (
    ACTIVE,
    FORKSERVER_PID_ENV,
    FORKSERVER_SOCKET_ENV,
    STANDBY,
    STATE_FILE_ENV,
    write_state,
)

logger = logging.getLogger("agent")

# Preloading takes seconds, tens under load; past this the worker starts anyway (runs then
# start cold, as they would without a fork server).
FORKSERVER_WAIT_SECONDS = 120.0
# What `prefect worker start` imports on its way to the first poll.
WORKER_MODULES = (
    "prefect.cli",
    "prefect.cli._app",
    "prefect.cli.worker",
    "prefect.cli._worker_utils",
    "prefect.workers.process",
    "prefect.workers.server",
    "prefect.utilities.processutils",
    "prefect.client.orchestration",
    "uvicorn",
)


def wait_for_forkserver(
    path: str | None, pid: int | None, timeout: float = FORKSERVER_WAIT_SECONDS
) -> str:
    """Wait until the fork server at `path` listens; returns how the wait ended."""
    if not path:
        return "no fork server"
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if listening(path):
            return f"fork server warm after {time.monotonic() - began:.1f} s"
        if pid is not None and not process_alive(pid):
            return "fork server gone: runs start cold"
        time.sleep(0.1)
    return f"fork server not listening after {timeout:.0f} s: runs may start cold"


def wait_for_promotion() -> bool:
    """Block until the agent writes a byte on our standard input; False at end of file (the
    agent is gone)."""
    promoted = bool(os.read(0, 1))
    # The runs we start must not inherit the agent's end of the pipe.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return promoted


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(prog="python -m agent.worker")
    parser.add_argument("--standby", action="store_true", help="wait for the agent's promotion")
    parser.add_argument("prefect_args", nargs=argparse.REMAINDER, help="after --: Prefect's")
    args = parser.parse_args(argv)
    prefect_args = args.prefect_args[1:] if args.prefect_args[:1] == ["--"] else args.prefect_args
    if not prefect_args:
        parser.error("give Prefect's CLI arguments after --, e.g. -- worker start --pool P")
    for module in WORKER_MODULES:
        importlib.import_module(module)
    pid = os.environ.get(FORKSERVER_PID_ENV)
    how = wait_for_forkserver(os.environ.get(FORKSERVER_SOCKET_ENV), int(pid) if pid else None)
    state_file = os.environ.get(STATE_FILE_ENV)
    if args.standby:
        write_state(state_file, STANDBY)
        logger.info("standby (%s): waiting for promotion", how)
        if not wait_for_promotion():
            logger.info("the agent is gone before promoting this standby")
            return
        logger.info("promoted: starting the worker")
    else:
        logger.info("%s: starting the worker", how)
    write_state(state_file, ACTIVE)
    settings = AgentSettings()  # the agent's, whose environment this process has
    tls.install()
    outages.install()
    prefect_settings.remember_environment_variables()
    recent_reads.install()
    if settings.agent_push:
        push.install(settings.work_pool_name)
    # Prefect's worker sets the root logger to WARNING as it starts: ours keep saying more.
    logger.setLevel(logging.INFO)
    from prefect.cli import app

    sys.argv = ["prefect", *prefect_args]
    app()


if __name__ == "__main__":
    main()
