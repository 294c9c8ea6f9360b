"""/models: which version of which model answers for each dataset."""

from fastapi import APIRouter

from serving.deps import Allowed, ChampionsDep
from serving.schemas import LoadedModel

router = APIRouter(prefix="/models", tags=["models"])


@router.get(
    "", operation_id="list_models", response_model=list[LoadedModel], summary="What is served"
)
async def list_models(champions: ChampionsDep, _: Allowed) -> list[LoadedModel]:
    return [
        LoadedModel(dataset=m.dataset, model=m.name, version=m.version, loaded_at=m.loaded_at)
        for m in champions.loaded()
    ]
