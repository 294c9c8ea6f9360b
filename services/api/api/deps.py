"""What the routes depend on, as typed `Annotated` dependencies (tests override them with
`app.dependency_overrides`): the settings and metrics (`create_app` sets them), the Prefect
gateway, the database and the idempotency keys (the lifespan opens them), and the caller of
a request (`common.web.access`)."""

from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter, Gauge

from api.db import ApiDatabase
from api.idempotency import IdempotencyKeys
from api.people import LoginLimiter
from api.prefect_gateway import PrefectGateway
from api.run_events import RunEvents
from api.settings import ApiSettings
from common.web.access import guard
from common.web.auth import Authenticator, Caller
from common.web.edge import Metrics


class ApiMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("api")
        self.runs_triggered = Counter(
            "api_runs_triggered_total",
            "Flow runs created through POST /runs",
            ["flow"],
            registry=self.registry,
        )
        self.prefect_run_reads = Gauge(
            "api_prefect_run_reads",
            "GET /runs/{id} reads that went to Prefect since the start (others: the cache)",
            registry=self.registry,
        )


# Each reads what `api.main` put in `app.state`.
def get_app_settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> ApiMetrics:
    metrics: ApiMetrics = request.app.state.metrics
    return metrics


def get_prefect(request: Request) -> PrefectGateway:
    prefect: PrefectGateway = request.app.state.prefect
    return prefect


def get_run_events(request: Request) -> RunEvents:
    run_events: RunEvents = request.app.state.run_events
    return run_events


def get_database(request: Request) -> ApiDatabase:
    database: ApiDatabase = request.app.state.database
    return database


def get_idempotency_keys(request: Request) -> IdempotencyKeys:
    idempotency_keys: IdempotencyKeys = request.app.state.idempotency_keys
    return idempotency_keys


def get_login_limiter(request: Request) -> LoginLimiter:
    limiter: LoginLimiter = request.app.state.login_limiter
    return limiter


def get_door_auth(request: Request) -> Authenticator:
    """The door's authenticator: the API's keys, with rate limits of its own (a request to
    our API through the door is counted once by the door and once by the API)."""
    auth: Authenticator = request.app.state.door_auth
    return auth


SettingsDep = Annotated[ApiSettings, Depends(get_app_settings)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
PrefectDep = Annotated[PrefectGateway, Depends(get_prefect)]
RunEventsDep = Annotated[RunEvents, Depends(get_run_events)]
DatabaseDep = Annotated[ApiDatabase, Depends(get_database)]
IdempotencyDep = Annotated[IdempotencyKeys, Depends(get_idempotency_keys)]
LoginLimiterDep = Annotated[LoginLimiter, Depends(get_login_limiter)]
DoorAuth = Annotated[Authenticator, Depends(get_door_auth)]
# The caller (its key's name and role, or its address for an open read), allowed the route
# by the role table (common.web.access), rate limit applied.
Allowed = Annotated[Caller, Depends(guard("api"))]
