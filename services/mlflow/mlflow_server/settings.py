"""Settings of the mlflow image. MLflow's own variables keep MLflow's names."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MlflowServerSettings(BaseSettings):
    """Read from the environment (and `.env`); every name is documented in docs/settings.md."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    mlflow_backend_store_uri: str = Field(
        description="PostgreSQL URL of MLflow's database (created if absent), with its "
        "password: postgresql://user:password@host:5432/mlflow."
    )
    mlflow_artifacts_destination: str = Field(
        "var/mlflow/artifacts",
        description="Where the server keeps artifacts (models); clients reach them through it.",
    )
    mlflow_server_host: str = Field("127.0.0.1", description="Interface the server listens on.")
    mlflow_server_port: int = Field(5000, description="Port of the MLflow API and UI.")
    mlflow_server_workers: int = Field(
        1,
        ge=1,
        description="uvicorn worker processes. More than one costs every answer on a kept-alive "
        "connection 40 ms: uvicorn's workers share a socket on which TCP_NODELAY is not set.",
    )
    mlflow_server_allowed_hosts: str | None = Field(
        None,
        description="Host headers the server answers (DNS-rebinding guard); unset: "
        "mlflow, 127.0.0.1 and localhost on MLFLOW_SERVER_PORT.",
    )

    def allowed_hosts(self) -> str:
        port = self.mlflow_server_port
        return self.mlflow_server_allowed_hosts or ",".join(
            f"{host}:{port}" for host in ("mlflow", "127.0.0.1", "localhost")
        )


@lru_cache
def get_settings() -> MlflowServerSettings:
    return MlflowServerSettings()
