"""/flows: what POST /runs can start, with each flow's parameter schema."""

from fastapi import APIRouter

from api.deps import Allowed, PrefectDep
from api.schemas import Flow

router = APIRouter(prefix="/flows", tags=["flows"])


@router.get("", operation_id="list_flows", response_model=list[Flow], summary="Flows the API runs")
async def list_flows(prefect: PrefectDep, _: Allowed) -> list[Flow]:
    """Every deployment named DEPLOYMENT_NAME on the work pool (narrowed by API_FLOWS): a new
    flow appears here, and can be started, about a second after its registration (its
    deployment's event; within 5 s while the API hears no events)."""
    return [
        Flow(
            name=name,
            deployment=f"{name}/{deployment.name}",
            description=deployment.description,
            parameters=deployment.parameter_openapi_schema or {},
        )
        for name, deployment in (await prefect.flows()).items()
    ]
