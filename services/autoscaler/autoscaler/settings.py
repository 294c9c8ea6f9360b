"""Settings of the autoscaler (`python -m autoscaler`). Their environment variables are
AUTOSCALER_*, and the two it shares with the agents: WORK_POOL_NAME and AGENT_LIMIT."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from autoscaler.recovery import RecoveryPolicy
from autoscaler.scaling import ScalingPolicy
from common.contract import DEFAULT_WORK_POOL


class AutoscalerSettings(BaseSettings):
    """Settings of the autoscaler, which runs beside the agents (in the agent image) and follows
    the pool's backlog with their count."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    work_pool_name: str = Field(DEFAULT_WORK_POOL, description="Prefect work pool to follow.")
    agent_limit: int = Field(
        2,
        ge=1,
        description="Runs per agent: what each agent runs at once (its AGENT_LIMIT) and the "
        "divisor of the backlog. The autoscaler starts its local agents with it.",
    )
    autoscaler_backend: Literal["docker", "process", "metrics-only"] = Field(
        "docker",
        description="docker: containers of the Compose agent service; process: local agent "
        "processes (make dev, tests); metrics-only: export the backlog on /metrics and act on "
        "nothing (Kubernetes, where KEDA scales the agents).",
    )
    autoscaler_min_agents: int = Field(1, ge=0, description="Fewest agents.")
    autoscaler_max_agents: int = Field(4, ge=1, description="Most agents.")
    autoscaler_poll_seconds: float = Field(5, gt=0, description="Seconds between decisions.")
    autoscaler_scale_up_cooldown_seconds: float = Field(
        0, ge=0, description="Seconds between two scale-ups."
    )
    autoscaler_scale_down_cooldown_seconds: float = Field(
        60, ge=0, description="Seconds the backlog must stay low before idle agents stop."
    )
    autoscaler_standby_agents: int = Field(
        3,
        ge=0,
        description="Warm standby agents kept for scale-ups (never more than the maximum "
        "leaves room for); started while the pool is calm, promoted before any cold start.",
    )
    autoscaler_stop_grace_seconds: float = Field(
        30, ge=1, description="Seconds from SIGTERM to SIGKILL when an agent is stopped."
    )
    autoscaler_metrics_host: str = Field("127.0.0.1", description="Address of /metrics.")
    autoscaler_metrics_port: int = Field(9090, ge=0, le=65535, description="Port of /metrics.")
    autoscaler_compose_project: str | None = Field(
        None,
        description="Compose project of the agents (docker backend); unset: the autoscaler "
        "container's own project.",
    )
    autoscaler_agent_service: str = Field(
        "agent", description="Compose service whose containers are the agents."
    )
    autoscaler_crash_retries: int = Field(
        1,
        ge=0,
        description="How many times a Crashed run (its agent died) is rescheduled; 0: never.",
    )
    autoscaler_orphan_grace_seconds: float = Field(
        60,
        ge=0,
        description="Seconds a Pending or Cancelling run may go without an agent before it is "
        "ended (Crashed, or Cancelled).",
    )
    autoscaler_crash_settle_seconds: float = Field(
        45,
        ge=0,
        description="Seconds with no heartbeat from a Crashed run before it is rescheduled "
        "(at once when its agent is known to be gone).",
    )

    @model_validator(mode="after")
    def _valid_policy(self) -> AutoscalerSettings:
        self.policy()  # raises ValueError with the reason, reported as a settings error
        return self

    def recovery_policy(self) -> RecoveryPolicy:
        return RecoveryPolicy(
            crash_retries=self.autoscaler_crash_retries,
            pending_grace=self.autoscaler_orphan_grace_seconds,
            settle=self.autoscaler_crash_settle_seconds,
        )

    def policy(self) -> ScalingPolicy:
        return ScalingPolicy(
            min_agents=self.autoscaler_min_agents,
            max_agents=self.autoscaler_max_agents,
            runs_per_agent=self.agent_limit,
            scale_down_cooldown=self.autoscaler_scale_down_cooldown_seconds,
            scale_up_cooldown=self.autoscaler_scale_up_cooldown_seconds,
            standby_agents=self.autoscaler_standby_agents,
        )
