"""Settings of the local stack (`make dev`)."""

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DevSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    state_dir: Path = Field(
        Path("var"), description="Where local mode keeps Postgres, Prefect, data and models."
    )
    database_url: str | None = Field(
        None,
        description="A PostgreSQL database for the stack's own data. Unset in local mode: an "
        "embedded server runs under STATE_DIR. Prefect uses the database `prefect` beside it.",
    )
    prefect_server_api_port: int = Field(4200, description="Port of the Prefect API and UI.")
    api_port: int = Field(8000, description="Port of the stack's API.")
    mlflow_server_port: int = Field(5000, description="Port of the MLflow server and UI.")
    serving_port: int = Field(8001, description="Port of the serving service.")
    tls_cert_file: Path | None = Field(
        None,
        description="The front door's certificate (PEM). Unset: `make env` writes a "
        "self-signed one to certs/gateway.crt.",
    )
    tls_key_file: Path | None = Field(
        None,
        description="Its private key (PEM), readable by the key's group, which the gateway "
        "container joins (TLS_KEY_GID). Unset: certs/gateway.key.",
    )
