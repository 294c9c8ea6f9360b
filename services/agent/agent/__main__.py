"""`python -m agent`: start a Prefect process worker on the pool, configured from AgentSettings.

With AGENT_FORKSERVER (the default) it first starts the fork server (agent.forkserver), so
that runs whose job command is `python -m agent.launch` start warm; see agent.launch.
"""

import os
import subprocess
import sys

from agent.launch import SOCKET_ENV
from agent.settings import AgentSettings

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
    settings = AgentSettings()
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_POLL_SECONDS)
    if settings.agent_forkserver:
        # Launchers find the server through the runs' environment, which the worker
        # passes on from its own.
        os.environ[SOCKET_ENV] = settings.agent_forkserver_socket
        # Not waited for: it imports while the worker starts, and a run that comes before
        # it listens starts cold. It exits once the worker (this pid, after exec) is gone.
        subprocess.Popen(forkserver_command(settings))
    else:
        os.environ.pop(SOCKET_ENV, None)
    command = worker_command(settings)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
