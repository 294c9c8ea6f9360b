"""The agent's entry point (agent.__main__): the worker command it runs, active or standby."""

import sys

from agent.__main__ import worker_command
from agent.settings import AgentSettings
from testkit.imports import modules_after


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


def test_the_agent_process_itself_does_not_import_prefect() -> None:
    # `python -m agent` only starts and watches its fork server and worker: Prefect in it
    # cost every agent, standby ones too, 33 MiB of unique memory and 0.8 s before its fork
    # server even started. A fresh interpreter, as the image runs it.
    packages = {module.split(".")[0] for module in modules_after("import agent.__main__")}
    assert "agent" in packages
    assert "prefect" not in packages and "httpx" not in packages, sorted(packages)
