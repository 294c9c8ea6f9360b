"""The FastAPI app: `create_app` wires the pieces (settings and metrics in `app.state`, the
edge and audit middleware, the routers of `api.routers`); the lifespan opens the database
and the Prefect gateway, which the routes take as dependencies (`api.deps`)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api.audit import AuditMiddleware
from api.backfills import Backfiller
from api.db import ApiDatabase
from api.deps import ApiMetrics
from api.idempotency import IdempotencyKeys
from api.people import LoginLimiter
from api.prefect_gateway import open_gateway
from api.routers import (
    PROBLEM_RESPONSES,
    audit,
    backfills,
    door,
    flows,
    health,
    keys,
    login,
    runs,
    users,
    webhooks,
)
from api.run_events import RunEvents
from api.settings import ApiSettings, get_settings
from api.webhooks import Deliverer, resolve
from common.web import problems
from common.web.auth import Authenticator, KeyChecker, SessionChecker
from common.web.db import blocking, open_database
from common.web.edge import EdgeMiddleware
from common.web.ratelimit import RateLimiter

logger = logging.getLogger("api")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: ApiSettings = app.state.settings
    key = settings.api_key.get_secret_value() if settings.api_key else None
    database = await open_database(settings.database_url, key, ApiDatabase)
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
        app.state.metrics.prefect_run_reads.set_function(lambda: prefect.records.fetches)
        app.state.prefect, app.state.database = prefect, database
        app.state.audit = database  # where AuditMiddleware appends
        app.state.idempotency_keys = IdempotencyKeys(database, settings.idempotency_retention_hours)
        app.state.auth, app.state.door_auth = authenticators(
            settings, KeyChecker(database), SessionChecker(database)
        )
        app.state.run_events = events = RunEvents()
        prefect.deployments_fresh_after = events.deployments_fresh_after
        deliverer = Deliverer(
            database,
            first_retry_seconds=settings.api_webhook_first_retry_seconds,
            allow_private=settings.api_webhooks_allow_private,
            blocking=blocking,
        )
        events.listeners.append(deliverer.offer)
        app.state.backfiller = backfiller = Backfiller(database, prefect, blocking)
        events.listeners.append(backfiller.wake)
        tasks = [
            asyncio.create_task(events.run(), name="run-events"),
            asyncio.create_task(deliverer.run(), name="webhooks"),
            asyncio.create_task(
                deliverer.keep_up(prefect.run_events_since), name="webhooks-catch-up"
            ),
            asyncio.create_task(backfiller.run(), name="backfills"),
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await deliverer.close()
        await backfiller.release()
    database.close()


def authenticators(
    settings: ApiSettings, keys: KeyChecker, sessions: SessionChecker
) -> tuple[Authenticator, Authenticator]:
    """The API's own authenticator and the door's: one copy of the keys and of the sessions,
    a rate limit each."""

    def limiter() -> RateLimiter:
        return RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst)

    own = Authenticator(
        keys,
        limiter(),
        insecure_dev_mode=settings.api_insecure_dev_mode,
        reads_require_key=settings.api_reads_require_key,
        sessions=sessions,
    )
    door = Authenticator(
        keys, limiter(), insecure_dev_mode=settings.api_insecure_dev_mode, sessions=sessions
    )
    return own, door


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    # Swagger UI (/docs) and ReDoc (/redoc) from assets in the image: they work offline.
    app = FastAPIOffline(
        title="Training stack API",
        version="1.0.0",
        description="Start training runs and follow them, without knowing Prefect. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.settings = settings
    app.state.metrics = ApiMetrics()
    app.state.resolve = resolve  # webhook targets' names (in-process tests: a fake)
    app.state.login_limiter = LoginLimiter(
        settings.login_max_failures, settings.login_window_seconds
    )
    problems.install(app)
    # Inside the edge: an entry carries the request id the edge chose.
    app.add_middleware(AuditMiddleware)
    app.add_middleware(
        EdgeMiddleware, max_body_bytes=settings.api_max_body_bytes, metrics=app.state.metrics
    )
    for router in (
        runs.router,
        backfills.router,
        webhooks.router,
        flows.router,
        keys.router,
        audit.router,
        users.router,
        login.router,
        door.router,
        health.router,
    ):
        app.include_router(router)
    return app
