"""`python -m agent`: start a Prefect process worker on the pool, configured from AgentSettings."""

import os

from agent.settings import AgentSettings

# Prefect polls every 10 s by default, which dominates trigger-to-running time.
DEFAULT_POLL_SECONDS = "2"


def worker_command(settings: AgentSettings) -> list[str]:
    command = ["prefect", "worker", "start", "--pool", settings.work_pool_name, "--type", "process"]
    command += ["--name", settings.agent_name]
    if settings.agent_limit is not None:
        command += ["--limit", str(settings.agent_limit)]
    if settings.agent_healthcheck:
        command.append("--with-healthcheck")
    return command


def main() -> None:
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", DEFAULT_POLL_SECONDS)
    command = worker_command(AgentSettings())
    os.execvp(command[0], command)


if __name__ == "__main__":
    main()
