"""When to restart a process that exited: after a delay that grows while it keeps failing.

One policy for every supervisor: the agent keeps its Prefect worker up with it
(agent.supervisor), and local mode (devstack) restarts the stack's services with the same
delays. A plain function, no processes.
"""

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
