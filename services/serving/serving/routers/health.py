"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ServingDep
from serving.schemas import Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", operation_id="healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    summary="Every configured dataset has a champion loaded",
    responses={503: {"model": Readiness, "description": "Not ready (see Retry-After)"}},
)
async def readyz(svc: ServingDep, response: Response) -> Readiness:
    missing = [d for d in svc.champions.datasets if svc.champions.get(d) is None]
    if missing:
        response.status_code = 503
        response.headers["Retry-After"] = svc.retry_after()
    return Readiness(status="unavailable" if missing else "ok", missing=missing)


@router.get(
    "/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=Response
)
async def prometheus_metrics(svc: ServingDep) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
