"""What the routes depend on, as typed `Annotated` dependencies (tests override them with
`app.dependency_overrides`): the settings, the champions (the registry behind them), the
metrics, and the caller of a request (the API's keys and rate limits)."""

from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter, Gauge

from common.web.access import guard
from common.web.auth import Caller
from common.web.edge import Metrics
from serving.champions import Champions
from serving.settings import ServingSettings


class ServingMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("serving")
        self.predictions = Counter(
            "serving_predictions_total", "Trips predicted", ["model"], registry=self.registry
        )
        self.version = Gauge(
            "serving_model_version", "The version served", ["model"], registry=self.registry
        )


# Each reads what `serving.main.create_app` put in `app.state`.
def get_app_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def get_champions(request: Request) -> Champions:
    return request.app.state.champions


def get_metrics(request: Request) -> ServingMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[ServingSettings, Depends(get_app_settings)]
ChampionsDep = Annotated[Champions, Depends(get_champions)]
MetricsDep = Annotated[ServingMetrics, Depends(get_metrics)]
# The caller, allowed the route by the role table (common.web.access), rate limit applied
# (`app.state.auth` is set at start-up).
Allowed = Annotated[Caller, Depends(guard("serving"))]


def retry_after(settings: ServingSettings) -> str:
    """Seconds until the champions are next looked at."""
    return str(max(1, round(settings.serving_poll_seconds)))
