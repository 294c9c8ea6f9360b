"""The FastAPI app: routes stay thin; validation, keys, idempotency and Prefect live beside it."""

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from prefect.client.schemas.objects import FlowRun, StateType
from prometheus_client import CONTENT_TYPE_LATEST, Counter, generate_latest
from pydantic import BeforeValidator

from api import problems
from api.auth import Authenticator, KeyChecker, reader, writer
from api.db import Database, blocking, prepare_database
from api.edge import EdgeMiddleware, Metrics
from api.prefect_gateway import FINAL, FLOWS, PrefectGateway, open_gateway
from api.problems import Problem
from api.ratelimit import RateLimiter
from api.requestid import current_request_id
from api.schemas import (
    Health,
    LogLine,
    LogPage,
    ProblemBody,
    RegisteredModel,
    Run,
    RunLinks,
    RunPage,
    RunRequest,
    RunState,
    StateTypeName,
)
from api.settings import ApiSettings, get_settings
from api.validation import parameter_errors

logger = logging.getLogger("api")
T = TypeVar("T")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ProblemBody, "content": {problems.MEDIA_TYPE: {}}, "description": text}
    for status, text in {
        400: "The body could not be parsed",
        401: "No or unknown API key",
        404: "Unknown run or flow",
        413: "Body too large",
        422: "Invalid request, with per-field errors",
        429: "Rate limited (see Retry-After)",
        503: "Prefect or the database is unavailable (see Retry-After)",
    }.items()
}


class ApiMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("api")
        self.runs_triggered = Counter(
            "api_runs_triggered_total",
            "Flow runs created through POST /runs",
            ["flow"],
            registry=self.registry,
        )


class Services:
    """What the routes share for the app's lifetime."""

    def __init__(self, settings: ApiSettings, database: Database, prefect: PrefectGateway):
        self.settings, self.database, self.prefect = settings, database, prefect
        self.auth = Authenticator(
            KeyChecker(database),
            RateLimiter(settings.api_rate_limit_per_second, settings.api_rate_limit_burst),
            insecure_dev_mode=settings.api_insecure_dev_mode,
            reads_require_key=settings.api_reads_require_key,
        )
        self.last_cleanup = float("-inf")

    blocking = staticmethod(blocking)


def services(request: Request) -> Services:
    return request.app.state.services


# -- presenting runs ---------------------------------------------------------------------


def _base_url(request: Request) -> str:
    configured = services(request).settings.api_public_url
    return (configured or str(request.base_url)).rstrip("/")


async def present(request: Request, run: FlowRun, *, details: bool = True) -> Run:
    svc = services(request)
    base = f"{_base_url(request)}/runs/{run.id}"
    state = run.state
    state_type = state.type.value if state else "SCHEDULED"
    flow = await svc.prefect.flow_name(run.flow_id)
    metrics = model = registry = error = None
    if details and state_type == "COMPLETED" and flow in ("train-model", "send-requests"):
        tables = await svc.prefect.training_tables(run.id)
        if "live-metrics" in tables:
            metrics = {row["metric"]: row["value"] for row in tables["live-metrics"]}
        if "model-metrics" in tables:
            metrics = {row["metric"]: row["value"] for row in tables["model-metrics"]}
            model = metrics.pop("model", None)
        if tables.get("model-registry"):
            [row] = tables["model-registry"]
            registry = RegisteredModel(
                name=row["model"],
                version=row["version"],
                alias=row["alias"],
                decision=row.get("decision"),
                mlflow_run=row["mlflow_run"],
                url=row["model_version"],
            )
    if state_type in ("FAILED", "CRASHED"):
        error = state.message if state else None
    ui = svc.settings.prefect_ui_url
    return Run(
        id=run.id,
        flow=flow,
        name=run.name,
        state=RunState(
            type=state_type,
            name=state.name if state else "Scheduled",
            message=state.message if state else None,
        ),
        parameters=run.parameters,
        tags=sorted(run.tags),
        created=run.created,
        started=run.start_time,
        ended=run.end_time,
        metrics=metrics,
        model=model,
        registry=registry,
        error=error,
        links=RunLinks(
            self=base,
            logs=f"{base}/logs",
            cancel=f"{base}/cancel",
            ui=f"{ui.rstrip('/')}/runs/flow-run/{run.id}" if ui else None,
        ),
    )


def _iso_only(value: object) -> object:
    """Pydantic reads numbers as Unix times; the documented format is ISO 8601 only."""
    if isinstance(value, str) and re.fullmatch(r"[\d.eE+-]+", value.strip()):
        raise ValueError("expected an ISO 8601 date-time, like 2021-08-15T00:00:00Z")
    return value


IsoDatetime = Annotated[dt.datetime, BeforeValidator(_iso_only)]


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
        if isinstance(offset, int) and offset >= 0:
            return offset
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise Problem(
        422,
        "validation-error",
        "cursor is not one this API gave out",
        errors=[{"field": "query.cursor", "message": "invalid cursor"}],
    )


def _next_url(request: Request, offset: int) -> str:
    return str(request.url.include_query_params(cursor=_encode_cursor(offset)))


def request_hash(body: RunRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# -- the app -----------------------------------------------------------------------------


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        await anyio.to_thread.run_sync(prepare_database, database, key)
        if settings.api_insecure_dev_mode:
            logger.warning(
                "INSECURE DEV MODE: requests without an API key are accepted. "
                "Never run like this outside your own machine."
            )
        async with open_gateway(settings.deployment_name) as prefect:
            app.state.services = Services(settings, database, prefect)
            app.state.auth = app.state.services.auth
            yield
        database.close()

    app = FastAPI(
        title="Training stack API",
        version="1.0.0",
        description="Start training runs and follow them, without knowing Prefect. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        responses=PROBLEM_RESPONSES,
    )
    app.state.metrics = metrics
    problems.install(app)
    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.api_max_body_bytes, metrics=metrics)

    @app.post(
        "/runs",
        status_code=202,
        response_model=Run,
        summary="Start a flow run",
        responses={409: PROBLEM_RESPONSES[422] | {"description": "Idempotency-Key reused"}},
    )
    async def create_run(
        body: RunRequest,
        request: Request,
        response: Response,
        caller: Annotated[str, Depends(writer)],
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=200,
                description="Replays of this key return the original run.",
            ),
        ] = None,
    ) -> Run:
        svc = services(request)
        if body.flow not in FLOWS:
            raise Problem(404, "not-found", f"unknown flow {body.flow!r}: use {' or '.join(FLOWS)}")
        deployment = await svc.prefect.deployment(body.flow)
        errors = parameter_errors(deployment.parameter_openapi_schema or {}, body.parameters)
        if errors:
            detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            raise Problem(422, "validation-error", detail, errors=errors)

        replayed, prefect_key = False, None
        if idempotency_key is not None:
            await _forget_expired(svc)
            claim = await svc.blocking(
                svc.database.claim,
                caller,
                idempotency_key,
                request_hash(body),
                settings.idempotency_retention_hours,
            )
            if not claim.same_request:
                raise Problem(
                    409,
                    "idempotency-key-reused",
                    f"Idempotency-Key {idempotency_key!r} was used for a different request",
                )
            replayed = claim.replayed
            # Unique per claim, so that Prefect itself returns one run to racing requests.
            prefect_key = f"api:{caller}:{idempotency_key}:{claim.nonce}"

        tags = ["api", f"caller:{caller}", f"request:{current_request_id()}"]
        run = await svc.prefect.create_run(deployment, body.parameters, tags, prefect_key)
        if idempotency_key is not None:
            await svc.blocking(svc.database.record_run, caller, idempotency_key, str(run.id))
            response.headers["Idempotency-Replayed"] = "true" if replayed else "false"
        if not replayed:
            metrics.runs_triggered.labels(body.flow).inc()
        presented = await present(request, run, details=False)
        response.headers["Location"] = presented.links.self
        return presented

    @app.get("/runs/{run_id}", response_model=Run, summary="A run's state and results")
    async def read_run(
        run_id: uuid.UUID, request: Request, _: Annotated[str, Depends(reader)]
    ) -> Run:
        return await present(request, await services(request).prefect.run(run_id))

    @app.get("/runs", response_model=RunPage, summary="List runs, newest first")
    async def list_runs(
        request: Request,
        _: Annotated[str, Depends(reader)],
        flow: Annotated[
            str | None,
            Query(pattern=f"^({'|'.join(FLOWS)})$", description="Only this flow."),
        ] = None,
        state: Annotated[StateTypeName | None, Query(description="Only this state type.")] = None,
        since: Annotated[
            IsoDatetime | None,
            Query(description="Only runs expected to start after this ISO 8601 time."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
    ) -> RunPage:
        svc = services(request)
        offset = _decode_cursor(cursor)
        deployment_ids = []
        for name in [flow] if flow else FLOWS:
            try:
                deployment_ids.append((await svc.prefect.deployment(name)).id)
            except Problem as missing:
                if missing.status != 404:
                    raise
        if not deployment_ids:
            return RunPage(runs=[])

        runs = await svc.prefect.runs(
            deployment_ids, StateType(state) if state else None, since, limit, offset
        )
        return RunPage(
            runs=[await present(request, run, details=False) for run in runs],
            next=_next_url(request, offset + limit) if len(runs) == limit else None,
        )

    @app.post(
        "/runs/{run_id}/cancel",
        status_code=202,
        response_model=Run,
        summary="Cancel a run (idempotent)",
        responses={409: PROBLEM_RESPONSES[422] | {"description": "The run already finished"}},
    )
    async def cancel_run(
        run_id: uuid.UUID, request: Request, _: Annotated[str, Depends(writer)]
    ) -> Run:
        prefect = services(request).prefect
        run = await prefect.run(run_id)
        if run.state and run.state.type in FINAL:
            raise Problem(
                409,
                "run-is-final",
                f"run {run_id} is already {run.state.type.value}; only runs that have not "
                "finished can be cancelled",
            )
        if not (run.state and run.state.type.value == "CANCELLING"):
            await prefect.cancel(run_id)
            run = await prefect.run(run_id)
        return await present(request, run, details=False)

    @app.get("/runs/{run_id}/logs", response_model=LogPage, summary="A run's log lines")
    async def run_logs(
        run_id: uuid.UUID,
        request: Request,
        _: Annotated[str, Depends(reader)],
        limit: Annotated[int, Query(ge=1, le=200)] = 100,
        cursor: Annotated[str | None, Query(description="`next` of the previous page.")] = None,
    ) -> LogPage:
        prefect = services(request).prefect
        offset = _decode_cursor(cursor)
        await prefect.run(run_id)  # 404 for an unknown run, rather than an empty page
        logs = await prefect.logs(run_id, limit, offset)
        return LogPage(
            lines=[LogLine(timestamp=x.timestamp, level=x.level, message=x.message) for x in logs],
            next=_next_url(request, offset + limit) if len(logs) == limit else None,
        )

    @app.get("/healthz", response_model=Health, summary="The process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        summary="Prefect and the database are reachable",
        responses={503: {"model": Health, "description": "Not ready (see Retry-After)"}},
    )
    async def readyz(request: Request, response: Response) -> Health:
        svc = services(request)
        checks = {}
        prefect_error = await svc.prefect.ready()
        checks["prefect"] = prefect_error or "ok"
        try:
            await svc.blocking(svc.database.ping)
            checks["database"] = "ok"
        except Problem as problem:
            checks["database"] = problem.detail
        if all(v == "ok" for v in checks.values()):
            return Health(status="ok", checks=checks)
        response.status_code = 503
        response.headers["Retry-After"] = str(problems.RETRY_AFTER_SECONDS)
        return Health(status="unavailable", checks=checks)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _forget_expired(svc: Services) -> None:
    """Drop expired idempotency keys, at most once a minute per process."""
    if time.monotonic() - svc.last_cleanup > 60:
        svc.last_cleanup = time.monotonic()
        await svc.blocking(svc.database.forget_expired, svc.settings.idempotency_retention_hours)
