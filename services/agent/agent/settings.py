"""Settings of the agent (`python -m agent`); the autoscaler's are in autoscaler.settings."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.agents import agent_name_prefix
from common.contract import DEFAULT_WORK_POOL


def default_forkserver_socket() -> str:
    """A socket path unique per agent process, in the runtime dir (or the temp dir)."""
    run_dir = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    # Unix socket paths are limited to about 100 bytes: keep the name short.
    return str(Path(run_dir) / f"agent-forkserver-{os.getpid()}.sock")


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    work_pool_name: str = Field(DEFAULT_WORK_POOL, description="Prefect work pool to poll.")
    agent_name: str = Field(
        default_factory=lambda: agent_name_prefix(socket.gethostname()) + str(os.getpid()),
        description="Worker name shown in Prefect; unique per process by default.",
    )
    agent_limit: int | None = Field(
        None, ge=1, description="Most flow runs one agent runs at once (unlimited when unset)."
    )
    agent_healthcheck: bool = Field(
        False, description="Serve GET :8080/health (the worker's webserver), for containers."
    )
    agent_forkserver: bool = Field(
        True,
        description="Start flow runs from a warm, pre-imported process (the fork server); "
        "when false, every run starts a fresh interpreter.",
    )
    agent_push: bool = Field(
        True,
        description="Poll as soon as Prefect's events say a run is scheduled in the pool "
        "(agent.push), besides every PREFECT_WORKER_QUERY_SECONDS; false: the poll alone.",
    )
    agent_forkserver_socket: str = Field(
        default_factory=default_forkserver_socket,
        description="Unix socket of the fork server; must be unique per agent.",
    )
    agent_forkserver_pid: int | None = Field(
        None,
        ge=1,
        description="Set when another process started the fork server on "
        "AGENT_FORKSERVER_SOCKET (its pid; `make dev` starts one that all its agents share): "
        "the agent uses that one and starts none of its own.",
    )
    agent_standby: bool = Field(
        False,
        description="Start as a standby: warm (imports done, fork server up) but not polling "
        "until SIGUSR1. The autoscaler starts its standby agents so.",
    )
    agent_state_file: str | None = Field(
        None,
        description="Where the agent writes `standby` (warm, waiting) or `active` (its worker "
        "started), for healthchecks and the autoscaler; unset: nowhere.",
    )
