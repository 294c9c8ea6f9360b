"""The serving app: the lifespan (keys, the champions' follower), the edge middleware and the
routers (`serving.routers`); predictions from each dataset's `champion`, with the API's keys
and errors."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mlflow
import mlflow.sklearn
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from mlflow.tracking import MlflowClient

from common.contract import CHAMPION, model_name
from common.web import problems
from common.web.auth import Authenticator, KeyChecker
from common.web.db import Database, prepare_database
from common.web.edge import EdgeMiddleware
from common.web.ratelimit import RateLimiter
from serving.champions import Champions
from serving.deps import Serving, ServingMetrics
from serving.routers import PROBLEM_RESPONSES, health, models, predictions
from serving.settings import ServingSettings, get_settings

logger = logging.getLogger("serving")
# Body limit: a full batch of trips with room to spare.
BYTES_PER_TRIP = 80


def _champion_version(client: MlflowClient) -> Any:
    def version(name: str) -> str | None:
        try:
            return client.get_registered_model(name).aliases.get(CHAMPION)
        except mlflow.exceptions.RestException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # nothing registered yet
            raise

    return version


def _load(name: str, version: str) -> Any:
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


async def _follow_champions(serving: Serving) -> None:
    while True:
        try:
            await anyio.to_thread.run_sync(serving.champions.refresh)
            for loaded in serving.champions.loaded():
                serving.metrics.version.labels(loaded.name).set(float(loaded.version))
        except Exception as error:  # MLflow away: keep serving what is loaded
            logger.warning("could not check the champions: %s", error)
        await asyncio.sleep(serving.settings.serving_poll_seconds)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServingMetrics()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    champions = Champions(
        settings.datasets(),
        model_name,
        _champion_version(MlflowClient(settings.mlflow_tracking_uri)),
        _load,
    )
    serving = Serving(settings, champions, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        await anyio.to_thread.run_sync(prepare_database, database, key)
        app.state.auth = Authenticator(
            KeyChecker(database),
            RateLimiter(settings.serving_rate_limit_per_second, settings.serving_rate_limit_burst),
            insecure_dev_mode=settings.api_insecure_dev_mode,
        )
        follower = asyncio.create_task(_follow_champions(serving))
        yield
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        database.close()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets in the image: they work offline.
    app = FastAPIOffline(
        title="Training stack serving",
        version="1.0.0",
        description="Trip durations from each dataset's champion model. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    problems.install(app)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.serving_max_batch * BYTES_PER_TRIP + 1024,
        metrics=metrics,
    )
    for router in (predictions.router, models.router, health.router):
        app.include_router(router)
    app.state.serving = serving
    return app
