"""The FastAPI app: the lifespan, the edge middleware and the routers (`api.routers`)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api.db import ApiDatabase
from api.deps import ApiMetrics, Services
from api.prefect_gateway import open_gateway
from api.routers import PROBLEM_RESPONSES, flows, health, runs
from api.settings import ApiSettings, get_settings
from common.web import problems
from common.web.db import prepare_database
from common.web.edge import EdgeMiddleware

logger = logging.getLogger("api")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = ApiDatabase(settings.database_url)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        await anyio.to_thread.run_sync(prepare_database, database, key)
        if settings.api_insecure_dev_mode:
            logger.warning(
                "INSECURE DEV MODE: requests without an API key are accepted. "
                "Never run like this outside your own machine."
            )
        async with open_gateway(
            deployment_name=settings.deployment_name,
            work_pool_name=settings.work_pool_name,
            allowed_flows=settings.allowed_flows(),
            read_cache_seconds=settings.api_read_cache_seconds,
        ) as prefect:
            services = Services(settings, database, prefect, metrics)
            app.state.services = services
            app.state.auth = services.auth  # what `common.web.auth.writer`/`reader` use
            yield
        database.close()

    # Swagger UI (/docs) and ReDoc (/redoc) from assets in the image: they work offline.
    app = FastAPIOffline(
        title="Training stack API",
        version="1.0.0",
        description="Start training runs and follow them, without knowing Prefect. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    problems.install(app)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.api_max_body_bytes, metrics=metrics)
    for router in (runs.router, flows.router, health.router):
        app.include_router(router)
    return app
