"""Liveness, readiness and Prometheus metrics."""

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.deps import ChampionsDep, MetricsDep, SettingsDep, retry_after
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
async def readyz(champions: ChampionsDep, settings: SettingsDep, response: Response) -> Readiness:
    missing = [d for d in champions.datasets if champions.get(d) is None]
    if missing:
        response.status_code = 503
        response.headers["Retry-After"] = retry_after(settings)
    return Readiness(status="unavailable" if missing else "ok", missing=missing)


@router.get(
    "/metrics", operation_id="metrics", summary="Prometheus metrics", response_class=Response
)
async def prometheus_metrics(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
