"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import DatabaseDep, MetricsDep, PrefectDep
from api.schemas import Health
from common.web import problems
from common.web.db import blocking
from common.web.problems import Problem

router = APIRouter(tags=["operations"])


@router.get(
    "/healthz", operation_id="healthz", response_model=Health, summary="The process is alive"
)
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Health,
    summary="Prefect and the database are reachable",
    responses={503: {"model": Health, "description": "Not ready (see Retry-After)"}},
)
async def readyz(prefect: PrefectDep, database: DatabaseDep, response: Response) -> Health:
    checks = {"prefect": await prefect.ready() or "ok"}
    try:
        await blocking(database.ping)
        checks["database"] = "ok"
    except Problem as problem:
        checks["database"] = problem.detail
    if all(v == "ok" for v in checks.values()):
        return Health(status="ok", checks=checks)
    response.status_code = 503
    response.headers["Retry-After"] = str(problems.RETRY_AFTER_SECONDS)
    return Health(status="unavailable", checks=checks)


@router.get(
    "/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=Response
)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
