"""The agent's entry point (agent.__main__): the worker command it runs, active or standby."""

import sys

from agent.__main__ import worker_command
from agent.settings import AgentSettings


def test_worker_command() -> None:
    settings = AgentSettings(work_pool_name="p", agent_name="a1", agent_limit=2)
    # Prefect's CLI, run by agent.worker once the fork server is warm.
    assert worker_command(settings) == [
        sys.executable, "-m", "agent.worker", "--",
        "worker", "start", "--pool", "p", "--type", "process", "--name", "a1", "--limit", "2",
    ]  # fmt: skip
    assert worker_command(settings, standby=True)[:4] == [
        sys.executable, "-m", "agent.worker", "--standby"
    ]  # fmt: skip
    assert worker_command(AgentSettings(agent_healthcheck=True))[-1] == "--with-healthcheck"
