"""What the routes depend on, as typed `Annotated` dependencies (tests override them with
`app.dependency_overrides`): the app's services, and the caller of a request."""

import time
from typing import Annotated

from fastapi import Depends, Request
from prometheus_client import Counter, Gauge

from api.db import ApiDatabase
from api.prefect_gateway import PrefectGateway
from api.settings import ApiSettings
from common.web.auth import Authenticator, KeyChecker, reader, writer
from common.web.db import blocking
from common.web.edge import Metrics
from common.web.ratelimit import RateLimiter

# How often expired idempotency keys are deleted, at most, per process.
CLEANUP_SECONDS = 60.0


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


class Services:
    """What the routes share for the app's lifetime."""

    def __init__(
        self,
        settings: ApiSettings,
        database: ApiDatabase,
        prefect: PrefectGateway,
        metrics: ApiMetrics,
    ) -> None:
        self.settings, self.database, self.prefect = settings, database, prefect
        self.metrics = metrics
        metrics.prefect_run_reads.set_function(lambda: prefect.records.fetches)
        self.auth = Authenticator(
            KeyChecker(database),
            RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
            insecure_dev_mode=settings.api_insecure_dev_mode,
            reads_require_key=settings.api_reads_require_key,
        )
        self._last_cleanup = float("-inf")

    async def forget_expired_keys(self) -> None:
        """Drop expired idempotency keys, at most once every CLEANUP_SECONDS."""
        if time.monotonic() - self._last_cleanup > CLEANUP_SECONDS:
            self._last_cleanup = time.monotonic()
            await blocking(self.database.forget_expired, self.settings.idempotency_retention_hours)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
# The caller's name (its key's, or its address for an open read), rate limit applied.
Writer = Annotated[str, Depends(writer)]
Reader = Annotated[str, Depends(reader)]
