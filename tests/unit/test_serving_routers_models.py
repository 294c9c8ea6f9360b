"""GET /models in-process, over a fake registry (testkit.apps): what is served, by dataset."""

from fastapi.testclient import TestClient

from testkit.apps import AUTH, ConstantModel, FakeRegistry, serving_app


def test_the_loaded_champions_are_listed() -> None:
    registry = FakeRegistry()
    registry.register("fhv", "3", ConstantModel(12.0))
    app, champions = serving_app(registry, serving_datasets="fhv,green")
    client = TestClient(app)
    assert client.get("/models", headers=AUTH).json() == []
    champions.refresh()
    [model] = client.get("/models", headers=AUTH).json()
    assert {k: model[k] for k in ("dataset", "model", "version")} == {
        "dataset": "fhv",
        "model": "trip-duration-fhv",
        "version": "3",
    }
    assert model["loaded_at"] > 0


def test_models_need_a_key() -> None:
    app, _ = serving_app(FakeRegistry())
    client = TestClient(app)
    assert client.get("/models").status_code == 401
    assert client.get("/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
