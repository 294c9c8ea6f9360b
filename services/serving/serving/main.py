"""The serving app: predictions from each dataset's `champion`, with the API's keys and errors."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import mlflow
import mlflow.sklearn
import numpy as np
import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.routing import APIRoute
from mlflow.tracking import MlflowClient
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from api import problems
from api.auth import Authenticator, KeyChecker, writer
from api.db import Database, prepare_database
from api.edge import EdgeMiddleware, Metrics
from api.problems import Problem
from api.ratelimit import RateLimiter
from serving.champions import Champions
from serving.settings import ServingSettings, get_settings

logger = logging.getLogger("serving")
# Body limit: a full batch of trips with room to spare.
BYTES_PER_TRIP = 80


Zone = Annotated[int | None, Field(ge=1, le=10_000)]


class Trip(TypedDict, total=False):
    """One trip. A typed dict rather than a model: validating a batch of them takes half the
    time (no object per trip)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    pickup_location_id: Annotated[
        Zone, Field(description="TLC zone of the pickup; null if not reported.")
    ]
    dropoff_location_id: Annotated[
        Zone, Field(description="TLC zone of the drop-off; null if not reported.")
    ]


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            # orjson.JSONDecodeError is a json.JSONDecodeError: FastAPI's 422 still applies.
            self._json = orjson.loads(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    """Request bodies parsed by orjson, 2.5x faster than the standard library on a batch
    (FastAPI's documented custom-request pattern)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def orjson_handler(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return orjson_handler


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"dataset": "fhv", "trips": [{"pickup_location_id": 132, "dropoff_location_id": 7}]}
            ]
        },
    )

    dataset: str = Field("fhv", description="Whose champion answers.")
    trips: list[Trip] = Field(min_length=1, description="One trip or a batch.")


class Prediction(BaseModel):
    model: str
    version: str
    minutes: list[float] = Field(description="Predicted duration of each trip, in order.")


class LoadedModel(BaseModel):
    dataset: str
    model: str
    version: str
    loaded_at: float


class ServingMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__("serving")
        self.predictions = Counter(
            "serving_predictions_total", "Trips predicted", ["model"], registry=self.registry
        )
        self.version = Gauge(
            "serving_model_version", "The version served", ["model"], registry=self.registry
        )


def _champion_version(client: MlflowClient) -> Any:
    def version(name: str) -> str | None:
        try:
            return client.get_registered_model(name).aliases.get("champion")
        except mlflow.exceptions.RestException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # nothing registered yet
            raise

    return version


def _load(name: str, version: str) -> Any:
    return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = ServingMetrics()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    champions = Champions(
        settings.datasets(),
        lambda dataset: f"trip-duration-{dataset}",
        _champion_version(MlflowClient(settings.mlflow_tracking_uri)),
        _load,
    )

    async def follow_champions() -> None:
        while True:
            try:
                await anyio.to_thread.run_sync(champions.refresh)
                for loaded in champions.loaded():
                    metrics.version.labels(loaded.name).set(float(loaded.version))
            except Exception as error:  # MLflow away: keep serving what is loaded
                logger.warning("could not check the champions: %s", error)
            await asyncio.sleep(settings.serving_poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings.database_url)
        key = settings.api_key.get_secret_value() if settings.api_key else None
        await anyio.to_thread.run_sync(prepare_database, database, key)
        app.state.auth = Authenticator(
            KeyChecker(database),
            RateLimiter(settings.serving_rate_limit_per_second, settings.serving_rate_limit_burst),
            insecure_dev_mode=settings.api_insecure_dev_mode,
        )
        follower = asyncio.create_task(follow_champions())
        yield
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        database.close()

    app = FastAPI(
        title="Training stack serving",
        version="1.0.0",
        description="Trip durations from each dataset's champion model. "
        "Errors are RFC 9457 problem details.",
        lifespan=lifespan,
    )
    app.router.route_class = OrjsonRoute
    problems.install(app)
    app.add_middleware(
        EdgeMiddleware,
        max_body_bytes=settings.serving_max_batch * BYTES_PER_TRIP + 1024,
        metrics=metrics,
    )

    @app.post("/predict", response_model=Prediction, summary="Predict trip durations")
    async def predict(body: PredictRequest, _: Annotated[str, Depends(writer)]) -> Prediction:
        if len(body.trips) > settings.serving_max_batch:
            raise Problem(
                422,
                "validation-error",
                f"{len(body.trips)} trips: at most {settings.serving_max_batch} per request",
            )
        if body.dataset not in champions.datasets:
            raise Problem(404, "not-found", f"dataset {body.dataset!r} is not served")
        loaded = champions.get(body.dataset)
        if loaded is None:
            raise Problem(
                503,
                "service-unavailable",
                f"no champion of trip-duration-{body.dataset} is loaded yet: train a model",
                headers={"Retry-After": str(max(1, round(settings.serving_poll_seconds)))},
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

    @app.get("/models", response_model=list[LoadedModel], summary="What is served")
    async def models(_: Annotated[str, Depends(writer)]) -> list[LoadedModel]:
        return [
            LoadedModel(dataset=m.dataset, model=m.name, version=m.version, loaded_at=m.loaded_at)
            for m in champions.loaded()
        ]

    @app.get("/healthz", summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Every configured dataset has a champion loaded")
    async def readyz(response: Response) -> dict[str, Any]:
        missing = [d for d in champions.datasets if champions.get(d) is None]
        if missing:
            response.status_code = 503
            response.headers["Retry-After"] = str(max(1, round(settings.serving_poll_seconds)))
        return {"status": "unavailable" if missing else "ok", "missing": missing}

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.champions = champions
    return app
