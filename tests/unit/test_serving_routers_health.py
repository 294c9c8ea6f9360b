"""Serving's /healthz, /readyz and /metrics in-process, over a fake registry (testkit.apps)."""

from fastapi.testclient import TestClient

from testkit.apps import ConstantModel, FakeRegistry, serving_app


def test_alive_without_a_champion() -> None:
    app, _ = serving_app(FakeRegistry())
    assert TestClient(app).get("/healthz").json() == {"status": "ok"}


def test_ready_once_every_dataset_has_a_champion() -> None:
    registry = FakeRegistry()
    registry.register("fhv", "1", ConstantModel(10.0))
    app, champions = serving_app(registry, serving_datasets="fhv,green", serving_poll_seconds=3)
    client = TestClient(app)
    champions.refresh()
    waiting = client.get("/readyz")
    assert waiting.status_code == 503 and waiting.headers["retry-after"] == "3"
    assert waiting.json() == {"status": "unavailable", "missing": ["green"]}
    registry.register("green", "1", ConstantModel(10.0))
    champions.refresh()
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "missing": []}


def test_metrics_need_no_key_and_are_prometheus_text() -> None:
    app, _ = serving_app(FakeRegistry())
    client = TestClient(app)
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'serving_requests_total{method="GET",route="/healthz",status="200"} 1.0' in (
        response.text
    )
