"""What the routes depend on, as typed `Annotated` dependencies: the app's shared pieces
(`Serving`), and the caller of a request (the API's keys and rate limits)."""

from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter, Gauge

from common.web.auth import writer
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


class Serving:
    """What the routes share for the app's lifetime: `app.state.serving`."""

    def __init__(
        self, settings: ServingSettings, champions: Champions, metrics: ServingMetrics
    ) -> None:
        self.settings, self.champions, self.metrics = settings, champions, metrics

    def retry_after(self) -> str:
        """Seconds until the champions are next looked at."""
        return str(max(1, round(self.settings.serving_poll_seconds)))


def get_serving(request: Request) -> Serving:
    return request.app.state.serving


ServingDep = Annotated[Serving, Depends(get_serving)]
# The caller's key name, rate limit applied (common.web.auth; `app.state.auth` is set at start-up).
Writer = Annotated[str, Depends(writer)]
