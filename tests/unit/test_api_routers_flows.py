"""GET /flows in-process, over a fake Prefect (testkit.apps): the deployments on the pool."""

import pytest
from fastapi.testclient import TestClient

from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app


@pytest.fixture
def prefect() -> FakePrefect:
    prefect = FakePrefect()
    prefect.add_flow("train-model", {"date": {"type": "string", "format": "date"}})
    prefect.add_flow("load-data")
    return prefect


def test_each_flow_with_its_deployment_and_parameters(prefect: FakePrefect) -> None:
    flows = TestClient(api_app(prefect, FakeDatabase())).get("/flows", headers=AUTH).json()
    assert [f["name"] for f in flows] == ["load-data", "train-model"]
    assert flows[1] == {
        "name": "train-model",
        "deployment": "train-model/monthly",
        "description": "The train-model flow.",
        "parameters": {
            "type": "object",
            "properties": {"date": {"type": "string", "format": "date"}},
        },
    }


def test_flows_need_a_key_unless_reads_are_open(prefect: FakePrefect) -> None:
    closed = TestClient(api_app(prefect, FakeDatabase()))
    assert closed.get("/flows").status_code == 401
    open_reads = TestClient(api_app(prefect, FakeDatabase(), api_reads_require_key=False))
    assert open_reads.get("/flows").status_code == 200


def test_prefect_away_is_a_503(prefect: FakePrefect) -> None:
    prefect.down = True
    response = TestClient(api_app(prefect, FakeDatabase())).get("/flows", headers=AUTH)
    assert response.status_code == 503 and response.headers["retry-after"]
