"""Settings of the agent container."""

import os
import socket

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.settings import DEFAULT_WORK_POOL


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    work_pool_name: str = Field(DEFAULT_WORK_POOL, description="Prefect work pool to poll.")
    agent_name: str = Field(
        default_factory=lambda: f"agent-{socket.gethostname()}-{os.getpid()}",
        description="Worker name shown in Prefect; unique per process by default.",
    )
    agent_limit: int | None = Field(
        None, ge=1, description="Most flow runs one agent runs at once (unlimited when unset)."
    )
    agent_healthcheck: bool = Field(
        False, description="Serve GET :8080/health (the worker's webserver), for containers."
    )
