"""Settings of the API container: the keys and dev mode of every service that checks keys
(common.web.settings), and the API's own."""

from functools import lru_cache

from pydantic import Field

from common.contract import DEFAULT_DEPLOYMENT, DEFAULT_WORK_POOL
from common.web.settings import KeySettings

# GET /runs/{id}?wait=: a longer wait is a 422; API_WAIT_MAX_SECONDS may only lower it.
WAIT_MAX_SECONDS = 60


class ApiSettings(KeySettings):
    api_reads_require_key: bool = Field(True, description="GET endpoints need a key too.")
    api_host: str = Field("127.0.0.1", description="Address uvicorn binds.")
    api_port: int = Field(8000, description="Port uvicorn binds.")
    api_public_url: str | None = Field(
        None,
        description="Base URL of the API as callers see it, for links (default: the request's).",
    )
    api_root_path: str = Field(
        "",
        pattern=r"^(/[A-Za-z0-9._~-]+)*$",
        description="Path prefix a reverse proxy strips before the API (Compose: `/api`, "
        "the front door's), so that /docs and the OpenAPI document name the public paths.",
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
    deployment_name: str = Field(
        DEFAULT_DEPLOYMENT, description="Deployment of each flow to trigger."
    )
    work_pool_name: str = Field(
        DEFAULT_WORK_POOL, description="Work pool whose deployments are the flows the API runs."
    )
    api_flows: str | None = Field(
        None,
        description="Comma-separated flows the API may start (default: every deployment on "
        "the pool).",
    )
    api_wait_max_seconds: float = Field(
        WAIT_MAX_SECONDS,
        gt=0,
        le=WAIT_MAX_SECONDS,
        description="The longest GET /runs/{id}?wait= holds a request: a longer wait is "
        "answered at this deadline (with the run's state then), as a long poll may be.",
    )
    api_read_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How stale GET /runs/{id} of a run that is not final may be (final runs "
        "are cached for good).",
    )
    session_ttl_seconds: int = Field(
        28_800,
        ge=60,
        le=30 * 86_400,
        description="How long a person's login lasts (the session cookie's Max-Age).",
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description="Failed logins per user name, and per client address, within "
        "LOGIN_WINDOW_SECONDS before further attempts wait (429; per API process).",
    )
    login_window_seconds: float = Field(
        300.0, gt=0, description="The window LOGIN_MAX_FAILURES counts failures in."
    )
    api_webhooks_allow_private: bool = Field(
        False,
        description="Let webhooks go to loopback, private and other non-public addresses "
        "(the stack's own network among them): for tests and closed networks only.",
    )
    api_webhook_first_retry_seconds: float = Field(
        5.0,
        gt=0,
        le=60,
        description="The wait after a webhook's first failed attempt; later waits grow from "
        "it (30 s, 2 min, ... 8 h: about a day in all at 5 s), then it is given up.",
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description="The MLflow server of the registry: a train-model backfill skips the "
        "months it holds a model of (unset: decided from the runs alone).",
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
