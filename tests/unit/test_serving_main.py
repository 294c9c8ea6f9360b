"""Serving's app in-process (no database, no MLflow): bodies read by orjson, a wrong
method's Allow, and trips' zone ids taken only as JSON integers (its OpenAPI document:
test_openapi.py)."""

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from common.web.auth import Authenticator, KeyChecker
from common.web.jsonbody import JsonRequest
from common.web.ratelimit import RateLimiter
from serving.main import create_app
from serving.settings import ServingSettings

SETTINGS = ServingSettings(
    database_url="postgresql://unused/x",
    api_key="k" * 40,
    mlflow_tracking_uri="http://127.0.0.1:1",  # never called: the follower runs in the lifespan
    serving_datasets="fhv",
)


@pytest.fixture
def app() -> FastAPI:
    app = create_app(SETTINGS)
    # What the lifespan sets, without its database: every request is the insecure dev caller.
    app.state.auth = Authenticator(
        KeyChecker(None),  # type: ignore[arg-type]  # never asked in insecure dev mode
        RateLimiter(1000.0, 1000),
        insecure_dev_mode=True,
    )
    return app


def test_predict_bodies_are_read_by_orjson(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    read = []
    original = JsonRequest.json

    async def json(self: JsonRequest) -> object:
        read.append(self.url.path)
        return await original(self)

    monkeypatch.setattr(JsonRequest, "json", json)
    TestClient(app).post("/predict", json={"dataset": "fhv", "trips": [{}]})
    assert read == ["/predict"]


def test_a_wrong_method_is_a_405_naming_the_right_one(app: FastAPI) -> None:
    response = TestClient(app).get("/predict")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["type"] == "/problems/method-not-allowed"


@pytest.mark.parametrize("value", ["132", 132.5, 132.0, True, [132], {"id": 132}])
@pytest.mark.parametrize("field", ["pickup_location_id", "dropoff_location_id"])
def test_a_zone_of_another_json_type_is_refused_not_coerced(
    app: FastAPI, field: str, value: object
) -> None:
    trips = [{"pickup_location_id": 1, "dropoff_location_id": 2}, {field: value}]
    response = TestClient(app).post("/predict", json={"dataset": "fhv", "trips": trips})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    [error] = response.json()["errors"]
    assert error["field"] == f"body.trips.1.{field}"
    assert error["message"] == "Input should be a valid integer"


def test_integer_and_null_zones_are_taken(app: FastAPI) -> None:
    trips = [{"pickup_location_id": 132, "dropoff_location_id": None}, {}]
    response = TestClient(app).post("/predict", json={"dataset": "fhv", "trips": trips})
    # Valid: past validation to the champion, of which none is loaded in this test.
    assert response.status_code == 503, response.text
    assert "no champion of trip-duration-fhv" in response.json()["detail"]
