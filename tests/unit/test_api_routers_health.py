"""The API's /healthz, /readyz and /metrics in-process, over fakes (testkit.apps)."""

from fastapi.testclient import TestClient

from testkit.apps import FakeDatabase, FakePrefect, api_app


def test_alive_without_prefect_or_the_database() -> None:
    prefect, database = FakePrefect(), FakeDatabase()
    prefect.down = database.down = True
    client = TestClient(api_app(prefect, database))
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_ready_when_both_answer() -> None:
    response = TestClient(api_app(FakePrefect(), FakeDatabase())).get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"prefect": "ok", "database": "ok"}}


def test_not_ready_says_which_is_away() -> None:
    prefect, database = FakePrefect(), FakeDatabase()
    client = TestClient(api_app(prefect, database))
    prefect.down = True
    response = client.get("/readyz")
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["checks"] == {
        "prefect": "ConnectError: connection refused",
        "database": "ok",
    }
    prefect.down, database.down = False, True
    checks = client.get("/readyz").json()["checks"]
    assert checks["prefect"] == "ok" and "the database is unavailable" in checks["database"]


def test_metrics_count_requests_by_route() -> None:
    client = TestClient(api_app(FakePrefect(), FakeDatabase()))
    client.get("/healthz")
    text = client.get("/metrics").text
    assert 'api_requests_total{method="GET",route="/healthz",status="200"} 1.0' in text
