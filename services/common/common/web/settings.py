"""Settings of the API container."""

import sys
from functools import lru_cache
from typing import TypeVar

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class InsecureConfigurationError(ValueError):
    """No API key configured and insecure dev mode not asked for."""


class KeySettings(BaseSettings):
    """API keys and dev mode: the same for every service that checks keys."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(description="PostgreSQL database of the stack's own data.")
    api_key: SecretStr | None = Field(
        None, description="The first API key (stored hashed). Required unless insecure dev mode."
    )
    api_insecure_dev_mode: bool = Field(
        False, description="Accept requests without a key. For `make dev` only."
    )

    @model_validator(mode="after")
    def _require_a_key(self) -> "KeySettings":
        if self.api_key is None and not self.api_insecure_dev_mode:
            raise InsecureConfigurationError(
                "no API key configured: set API_KEY (a long random secret), "
                "or API_INSECURE_DEV_MODE=true for local development only"
            )
        return self


class ApiSettings(KeySettings):
    api_reads_require_key: bool = Field(True, description="GET endpoints need a key too.")
    api_host: str = Field("127.0.0.1", description="Address uvicorn binds.")
    api_port: int = Field(8000, description="Port uvicorn binds.")
    api_public_url: str | None = Field(
        None,
        description="Base URL of the API as callers see it, for links (default: the request's).",
    )
    api_rate_limit_per_second: float = Field(20.0, gt=0, description="Token refill rate per key.")
    api_rate_limit_burst: int = Field(100, ge=1, description="Token bucket size per key.")
    api_max_body_bytes: int = Field(65_536, ge=1_024, description="Largest request body (413).")
    api_shutdown_grace_seconds: float = Field(
        20.0, ge=0, description="How long SIGTERM waits for in-flight requests."
    )
    idempotency_retention_hours: float = Field(
        24.0, gt=0, description="How long an Idempotency-Key is remembered."
    )
    deployment_name: str = Field("monthly", description="Deployment of each flow to trigger.")
    work_pool_name: str = Field(
        "training", description="Work pool whose deployments are the flows the API runs."
    )
    api_flows: str | None = Field(
        None,
        description="Comma-separated flows the API may start (default: every deployment on "
        "the pool).",
    )
    api_read_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How stale GET /runs/{id} of a run that is not final may be (final runs "
        "are cached for good).",
    )
    prefect_ui_url: str | None = Field(
        None, description="Prefect UI base URL, for links to runs (PREFECT_UI_URL)."
    )

    def allowed_flows(self) -> frozenset[str] | None:
        if not self.api_flows:
            return None
        return frozenset(f.strip() for f in self.api_flows.split(",") if f.strip())


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()


S = TypeVar("S", bound=BaseSettings)


def settings_or_report(settings: type[S], service: str) -> S | None:
    """The service's settings, or None after printing each bad variable by its name."""
    try:
        return settings()
    except ValidationError as error:
        for problem in error.errors():
            field = ".".join(str(p) for p in problem["loc"]).upper() or "settings"
            print(f"{service}: cannot start: {field}: {problem['msg']}", file=sys.stderr)
        return None
