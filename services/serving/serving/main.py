"""The serving app: predictions from each dataset's `champion`, with the API's keys and
errors. `create_app` wires the pieces (settings, champions, metrics in `app.state`; the edge
middleware; the routers of `serving.routers`); the lifespan opens what needs a network."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from common.web import problems
from common.web.auth import Authenticator, KeyChecker, SessionChecker
from common.web.db import Database, open_database
from common.web.edge import EdgeMiddleware
from common.web.ratelimit import RateLimiter
from serving.deps import ServingMetrics
from serving.registry import follow, mlflow_champions
from serving.routers import PROBLEM_RESPONSES, health, models, predictions
from serving.settings import ServingSettings, get_settings

# Body limit: a full batch of trips with room to spare.
BYTES_PER_TRIP = 80


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The key store (tables made, API_KEY stored), people's sessions and the champions'
    follower."""
    settings: ServingSettings = app.state.settings
    key = settings.api_key.get_secret_value() if settings.api_key else None
    database = await open_database(settings.database_url, key, Database)
    app.state.auth = Authenticator(
        KeyChecker(database),
        RateLimiter(settings.serving_rate_limit_per_second, settings.serving_rate_limit_burst),
        insecure_dev_mode=settings.api_insecure_dev_mode,
        sessions=SessionChecker(database),  # a logged-in person's cookie, as the API takes it
    )
    follower = asyncio.create_task(
        follow(app.state.champions, app.state.metrics, settings.serving_poll_seconds)
    )
    yield
    follower.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follower
    database.close()


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Swagger UI (/docs) and ReDoc (/redoc) from assets in the image: they work offline.
    app = FastAPIOffline(
        title="Training stack serving",
        version="1.0.0",
        description="Trip durations from each dataset's champion model. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.settings = settings
    app.state.metrics = ServingMetrics()
    app.state.champions = mlflow_champions(settings)  # reads nothing until the follower runs
    problems.install(app)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.serving_max_batch * BYTES_PER_TRIP + 1024,
        metrics=app.state.metrics,
    )
    for router in (predictions.router, models.router, health.router):
        app.include_router(router)
    return app
