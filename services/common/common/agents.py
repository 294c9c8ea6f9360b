"""What an agent and the autoscaler agree on: how an agent is named, started and promoted,
and the state file in which it says whether it waits as a standby or polls.

The agent (`services/agent`) writes and names; the autoscaler (`services/autoscaler`) reads,
starts and promotes; local mode (`services/devstack`) starts the fork server its agents
share. None imports another, so the terms live here.
"""

from __future__ import annotations

import os

# typing.TYPE_CHECKING without importing typing: every run's launcher (agent.launch) imports
# this module, and typing (like pathlib) is milliseconds on its way to RUNNING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

# The module an agent process runs (`python -m agent`); local mode's autoscaler starts
# agents with it, and Compose's agent image runs it as its command.
AGENT_MODULE: Final = "agent"
# Set to `true`, an agent starts as a warm standby that does not poll until promoted
# (SIGUSR1, relayed to its worker).
STANDBY_ENV: Final = "AGENT_STANDBY"
# Where an agent writes its state (one of STANDBY, ACTIVE); unset: nowhere.
STATE_FILE_ENV: Final = "AGENT_STATE_FILE"
# The fork server's Unix socket (runs' launchers find it there), and the pid of the one the
# agent waits for: its own, or one another process started and gave it (make dev starts one
# that all its agents share), in which case the agent starts none.
FORKSERVER_SOCKET_ENV: Final = "AGENT_FORKSERVER_SOCKET"
FORKSERVER_PID_ENV: Final = "AGENT_FORKSERVER_PID"
STANDBY: Final = "standby"
ACTIVE: Final = "active"


def agent_name_prefix(host: str) -> str:
    """How an agent's default name (agent-<host>-<pid>) starts: in a container, the host is
    the container's hostname, which is how the autoscaler tells which container a run is on."""
    return f"agent-{host}-"


def write_state(path: str | None, state: str) -> None:
    """Replace the state file's content at once (a reader never sees half of it)."""
    if not path:
        return
    partial = f"{path}.partial"
    with open(partial, "w") as file:
        file.write(state)
    os.replace(partial, path)


def read_state(path: str | None) -> str | None:
    """The agent's state, or None if it has written none (yet)."""
    if not path:
        return None
    try:
        with open(path) as file:
            return file.read().strip()
    except FileNotFoundError:
        return None
