"""POST /predict in-process, over a fake registry and key store (testkit.apps): minutes from
the champion, a swap seen by the next request, 404 for a dataset not served, 503 before a
champion or with the key store away, 401 without a good key, 422 for a batch too large."""

import pytest
from fastapi.testclient import TestClient

from testkit.apps import AUTH, ConstantModel, FakeDatabase, FakeRegistry, serving_app

TRIPS = [
    {"pickup_location_id": 132, "dropoff_location_id": 7},
    {"pickup_location_id": None, "dropoff_location_id": 265},
    {},
]


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.register("fhv", "3", ConstantModel(12.0))
    return registry


def test_the_champion_predicts_every_trip_in_order(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    response = TestClient(app).post(
        "/predict", json={"dataset": "fhv", "trips": TRIPS}, headers=AUTH
    )
    assert response.status_code == 200, response.text
    # A missing zone reaches the model as -1.
    assert response.json() == {
        "model": "trip-duration-fhv",
        "version": "3",
        "minutes": pytest.approx([12.132, 11.999, 11.999]),
    }


def test_the_dataset_defaults_to_fhv(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    response = TestClient(app).post("/predict", json={"trips": [{}]}, headers=AUTH)
    assert response.status_code == 200 and response.json()["model"] == "trip-duration-fhv"


def test_a_new_champion_answers_the_next_request(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    client = TestClient(app)
    registry.register("fhv", "4", ConstantModel(20.0))
    champions.refresh()
    body = client.post("/predict", json={"trips": [{}]}, headers=AUTH).json()
    assert (body["version"], body["minutes"]) == ("4", [pytest.approx(19.999)])


def test_a_champion_that_fails_to_load_leaves_the_old_one_serving(
    registry: FakeRegistry,
) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    registry.register("fhv", "4", ConstantModel(20.0, fails=True))
    champions.refresh()
    body = TestClient(app).post("/predict", json={"trips": [{}]}, headers=AUTH).json()
    assert body["version"] == "3"


def test_before_a_champion_is_a_503_with_retry_after(registry: FakeRegistry) -> None:
    app, _ = serving_app(registry, serving_poll_seconds=7)  # not refreshed: nothing loaded
    response = TestClient(app).post("/predict", json={"trips": TRIPS}, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/service-unavailable"
    assert "no champion of trip-duration-fhv is loaded yet" in response.json()["detail"]


def test_the_registry_away_keeps_nothing_loaded_and_a_503(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    registry.down = True
    with pytest.raises(ConnectionError):
        champions.refresh()  # the follower logs this and tries again
    response = TestClient(app).post("/predict", json={"trips": [{}]}, headers=AUTH)
    assert response.status_code == 503


def test_a_dataset_not_served_is_a_404(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    response = TestClient(app).post(
        "/predict", json={"dataset": "yellow", "trips": TRIPS}, headers=AUTH
    )
    assert response.status_code == 404
    assert response.json()["detail"] == "dataset 'yellow' is not served"


def test_a_batch_over_the_limit_is_a_422(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry, serving_max_batch=2)
    champions.refresh()
    response = TestClient(app).post("/predict", json={"trips": TRIPS}, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["detail"] == "3 trips: at most 2 per request"


@pytest.mark.parametrize(
    "body",
    [
        {"trips": []},
        {"dataset": "fhv"},
        {"trips": [{"pickup_location_id": 0}]},
        {"trips": [{"pickup_location_id": 10_001}]},
        {"trips": [{"zone": 1}]},
        {"trips": [{}], "extra": 1},
    ],
)
def test_bad_bodies_are_a_422_with_fields(registry: FakeRegistry, body: dict) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    response = TestClient(app).post("/predict", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json()["errors"] and response.json()["type"] == "/problems/validation-error"


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}]
)
def test_no_key_or_a_wrong_one_is_a_401(registry: FakeRegistry, headers: dict) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    response = TestClient(app).post("/predict", json={"trips": [{}]}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["type"] == "/problems/unauthorized"


def test_insecure_dev_mode_needs_no_key(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry, api_key=None, api_insecure_dev_mode=True)
    champions.refresh()
    assert TestClient(app).post("/predict", json={"trips": [{}]}).status_code == 200


def test_the_key_store_away_is_a_503(registry: FakeRegistry) -> None:
    database = FakeDatabase()
    database.down = True
    app, champions = serving_app(registry, database)
    champions.refresh()
    response = TestClient(app).post("/predict", json={"trips": [{}]}, headers=AUTH)
    assert response.status_code == 503
    assert response.headers["retry-after"]


def test_a_caller_over_its_rate_is_a_429(registry: FakeRegistry) -> None:
    app, champions = serving_app(
        registry, serving_rate_limit_per_second=0.001, serving_rate_limit_burst=1
    )
    champions.refresh()
    client = TestClient(app)
    assert client.post("/predict", json={"trips": [{}]}, headers=AUTH).status_code == 200
    limited = client.post("/predict", json={"trips": [{}]}, headers=AUTH)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1


def test_predictions_are_counted_by_model(registry: FakeRegistry) -> None:
    app, champions = serving_app(registry)
    champions.refresh()
    client = TestClient(app)
    client.post("/predict", json={"trips": TRIPS}, headers=AUTH)
    metrics = client.get("/metrics").text
    assert 'serving_predictions_total{model="trip-duration-fhv"} 3.0' in metrics
