"""Settings every service that checks keys shares (the API, serving), and how a service
reports settings it cannot start with."""

import sys
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
