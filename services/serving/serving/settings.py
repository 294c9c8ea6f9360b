"""Settings of the serving container. Keys and dev mode are the API's too (common.web.settings)."""

from functools import lru_cache

from pydantic import Field

from common.web.settings import KeySettings


class ServingSettings(KeySettings):
    """Read from the environment (and `.env`); every name is documented in docs/settings.md."""

    mlflow_tracking_uri: str = Field(description="The MLflow server holding the registry.")
    serving_datasets: str = Field(
        "fhv", description="Comma-separated datasets whose `champion` is served."
    )
    serving_host: str = Field("127.0.0.1", description="Address uvicorn binds.")
    serving_port: int = Field(8001, description="Port uvicorn binds.")
    serving_root_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path prefix a reverse proxy strips before serving (Compose: `/serving`, "
        "the front door's), so that /docs and the OpenAPI document name the public paths.",
    )
    serving_poll_seconds: float = Field(
        5.0, gt=0, description="How often the `champion` alias is checked for a new version."
    )
    serving_rate_limit_per_second: float = Field(
        1000.0, gt=0, description="Token refill rate per key (requests per second)."
    )
    serving_rate_limit_burst: int = Field(1000, ge=1, description="Token bucket size per key.")
    serving_max_batch: int = Field(1000, ge=1, le=100_000, description="Most trips per request.")

    def datasets(self) -> list[str]:
        return [name.strip() for name in self.serving_datasets.split(",") if name.strip()]


@lru_cache
def get_settings() -> ServingSettings:
    return ServingSettings()
