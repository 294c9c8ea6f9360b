"""Settings of the trainer image: the flows (run by agents) and the registration step."""

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.contract import DEFAULT_DEPLOYMENT, DEFAULT_WORK_POOL

TLC_URL_TEMPLATE = (
    "https://d37ci6vzurychx.cloudfront.net/trip-data/{dataset}_tripdata_{month}.parquet"
)


class TrainerSettings(BaseSettings):
    """Read from the environment (and `.env`); every name is documented in docs/settings.md."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    data_store_url: str = Field(
        "var/data", description="Directory or fsspec URL where loaded months are stored."
    )
    model_store_url: str = Field(
        "var/models", description="Directory or fsspec URL where fitted models are saved."
    )
    tlc_url_template: str = Field(
        TLC_URL_TEMPLATE, description="Where load-data downloads a month from (source=tlc)."
    )
    synthetic_rows: int = Field(
        100_000, ge=1_000, le=2_000_000, description="Rows per synthetic month."
    )
    synthetic_seed: int = Field(42, description="Seed of the synthetic generator.")
    download_timeout_seconds: float = Field(60.0, gt=0)
    download_retries: int = Field(
        5,
        ge=0,
        le=100,
        description="Retries of a download after a throttled answer (HTTP 403, 429), a "
        "timeout (408), a server error (5xx) or a broken connection; never after a 404.",
    )
    download_retry_seconds: float = Field(
        300,
        gt=0,
        description="No retry starts past this many seconds after a download's first "
        "attempt; each backoff wait is at most this divided by (retries + 1).",
    )
    download_retry_wait_seconds: float = Field(
        1.0,
        gt=0,
        description="The first wait before a retry (unless Retry-After says otherwise); "
        "each next one doubles, with up to half of it added at random.",
    )
    training_memory_limit_mb: int | None = Field(
        None,
        ge=1,
        description="Memory (MiB) a train-model run may use: a month whose estimate (from "
        "its row count, before reading) is over it fails the run. Unset: the memory of the "
        "machine, or of the container if it has a limit.",
    )

    mlflow_tracking_uri: str | None = Field(
        None,
        description="The MLflow server where train-model logs runs and registers models. "
        "Unset: models are only saved to the model store, and the run's log says so.",
    )
    mlflow_ui_url: str | None = Field(
        None, description="The MLflow UI as a browser reaches it (links); unset: the tracking URI."
    )
    # A run killed inside the lock frees it within DEAD_HOLDER_SECONDS (105 s, see
    # trainer.promotion_lock); 300 s covers that and a queue of live promotions.
    promotion_timeout_seconds: float = Field(
        300,
        gt=0,
        description="How long a promotion waits for the promotion lock: another run's "
        "promotion, or a killed run's slot, freed when its 60 s lease ends.",
    )

    serving_url: str = Field(
        "http://127.0.0.1:8001", description="The serving service send-requests calls."
    )
    api_key: SecretStr | None = Field(
        None, description="The key send-requests presents to serving (unset: dev mode)."
    )
    drift_tolerance: float = Field(
        0.10,
        ge=0,
        description="send-requests retrains when the live RMSE exceeds the champion's "
        "validation RMSE by more than this share.",
    )
    serving_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one request.")

    work_pool_name: str = Field(DEFAULT_WORK_POOL, description="Prefect work pool the agents poll.")
    deployment_name: str = Field(DEFAULT_DEPLOYMENT, description="Name of both deployments.")
    train_cron: str = Field("0 9 15 * *", description="Schedule of train-model.")
    load_cron: str = Field("0 9 1 * *", description="Schedule of load-data.")
    send_cron: str = Field("0 11 1 * *", description="Schedule of send-requests.")
    schedule_timezone: str = Field("America/New_York")
    default_data_source: str = Field(
        "tlc", pattern="^(tlc|synthetic)$", description="Source of scheduled load-data runs."
    )


@lru_cache
def get_settings() -> TrainerSettings:
    return TrainerSettings()
