"""/predict: trip durations from a dataset's champion, one trip or a batch."""

import numpy as np
from fastapi import APIRouter

from common.contract import model_name
from common.web.jsonbody import JsonRoute
from common.web.problems import Problem
from serving.deps import Allowed, ChampionsDep, MetricsDep, SettingsDep, retry_after
from serving.schemas import Prediction, PredictRequest

# Bodies parsed by orjson, as the API parses them (common.web.jsonbody): strict JSON, and 2.5x
# faster than the standard library on a batch.
router = APIRouter(tags=["predictions"], route_class=JsonRoute)


@router.post(
    "/predict",
    operation_id="predict",
    response_model=Prediction,
    summary="Predict trip durations",
)
async def predict(
    body: PredictRequest,
    champions: ChampionsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    _: Allowed,
) -> Prediction:
    """The minutes of each trip, from the `champion` of trip-duration-<dataset>: a 503 until
    one is loaded, a 404 for a dataset not served."""
    max_batch = settings.serving_max_batch
    if len(body.trips) > max_batch:
        raise Problem(
            422, "validation-error", f"{len(body.trips)} trips: at most {max_batch} per request"
        )
    if body.dataset not in champions.datasets:
        raise Problem(404, "not-found", f"dataset {body.dataset!r} is not served")
    loaded = champions.get(body.dataset)
    if loaded is None:
        raise Problem(
            503,
            "service-unavailable",
            f"no champion of {model_name(body.dataset)} is loaded yet: train a model",
            headers={"Retry-After": retry_after(settings)},
        )
    ids = np.array(
        [
            [t.get("pickup_location_id") or -1, t.get("dropoff_location_id") or -1]
            for t in body.trips
        ],
        dtype=np.int64,
    )
    minutes = loaded.predict(ids)
    metrics.predictions.labels(loaded.name).inc(len(body.trips))
    return Prediction(model=loaded.name, version=loaded.version, minutes=minutes.tolist())
