"""The serving service on the real registry: before a champion, after it, a hot swap under
load, and a version that does not load."""

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from devstack.stack import LocalStack, wait_until
from integration.servingkit import AUTH, register, serving_process, synthetic_month
from testkit.prefect_api import PrefectApi
from testkit.receiver import Receiver
from trainer.features import FEATURES
from trainer.registry import CHAMPION, model_name

pytestmark = pytest.mark.integration

TRIPS = [
    {"pickup_location_id": 132, "dropoff_location_id": 7},
    {"pickup_location_id": None, "dropoff_location_id": 265},
]


@pytest.fixture(scope="module")
def dataset() -> str:
    return f"serve{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def serving(stack: LocalStack, dataset: str) -> Iterator[str]:
    """A serving process of its own, for a dataset no other test registers, polling fast."""
    with serving_process(stack, "serving-test", dataset) as url:
        yield url


def _predict(serving: str, dataset: str) -> httpx.Response:
    return httpx.post(f"{serving}/predict", json={"dataset": dataset, "trips": TRIPS}, headers=AUTH)


def _served_version(serving: str) -> str | None:
    models = httpx.get(f"{serving}/models", headers=AUTH).json()
    return models[0]["version"] if models else None


def test_serving_follows_the_champion_without_a_failed_request(
    stack: LocalStack, serving: str, dataset: str
) -> None:
    # Before any champion: a 503 problem, never a 500.
    before = _predict(serving, dataset)
    assert before.status_code == 503, before.text
    assert before.headers["content-type"] == "application/problem+json"
    assert "no champion" in before.json()["detail"]
    assert httpx.get(f"{serving}/readyz").status_code == 503
    # No key: 401, as on the API.
    assert httpx.post(f"{serving}/predict", json={"trips": TRIPS}).status_code == 401

    train, val = synthetic_month("2021-01"), synthetic_month("2021-02")
    first, registered = register(stack, dataset, train, val)
    assert registered.alias == CHAMPION
    wait_until(lambda: _served_version(serving) == registered.version, 60, "the first champion")
    answer = _predict(serving, dataset)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["version"]) == (model_name(dataset), registered.version)
    expected = first.model.predict(pd.DataFrame([[132, 7], [-1, 265]], columns=FEATURES))
    assert body["minutes"] == pytest.approx(list(expected), rel=1e-12)
    assert httpx.get(f"{serving}/readyz").status_code == 200

    # A hot swap under load from 6 clients: every request answered 200, by one version or
    # the other.
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(headers=AUTH, timeout=10) as http:
            for _ in range(20_000):  # bounded; stopped well before
                if stop.is_set():
                    return
                response = http.post(
                    f"{serving}/predict", json={"dataset": dataset, "trips": TRIPS}
                )
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()["version"]] += 1

    clients = [threading.Thread(target=client) for _ in range(6)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(1)
        _, better = register(stack, dataset, val, val)  # fitted on the validation month
        assert better.alias == CHAMPION
        wait_until(lambda: versions[better.version] > 50, 60, "requests answered by the new one")
    finally:
        stop.set()
        for thread in clients:
            thread.join(30)
    assert set(statuses) == {200}, statuses
    assert versions[registered.version] > 0 and versions[better.version] > 0, versions

    # A champion whose artifact cannot be loaded is kept out; the old one keeps serving.
    mlflow = MlflowClient(stack.mlflow_url)
    name = model_name(dataset)
    run = mlflow.create_run(mlflow.get_experiment_by_name(name).experiment_id)
    mlflow.log_text(run.info.run_id, "not a model", "model/MLmodel")
    mlflow.set_terminated(run.info.run_id)
    broken = mlflow.create_model_version(
        name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    mlflow.set_registered_model_alias(name, CHAMPION, broken.version)
    log = stack.log_dir / "serving-test.log"
    wait_until(
        lambda: f"version {broken.version} failed to load" in log.read_text(errors="replace"),
        60,
        "serving to refuse the broken version",
    )
    assert _served_version(serving) == better.version
    still = _predict(serving, dataset)
    assert still.status_code == 200 and still.json()["version"] == better.version
    metrics = httpx.get(f"{serving}/metrics").text
    assert f'serving_model_version{{model="{model_name(dataset)}"}} {float(better.version)}' in (
        metrics
    )


def test_bad_requests_are_problems(serving: str, dataset: str) -> None:
    cases = [
        ({"dataset": dataset, "trips": []}, 422),
        ({"dataset": dataset, "trips": [{"pickup_location_id": "x"}]}, 422),
        ({"dataset": dataset, "trips": [{"pickup": 1}]}, 422),
        ({"dataset": dataset, "trips": [{"pickup_location_id": 0}]}, 422),
        ({"dataset": "purple", "trips": TRIPS}, 404),
        ('{"dataset": "fhv", "trips": [', 422),  # not JSON
    ]
    for body, status in cases:
        content = body if isinstance(body, str) else json.dumps(body)
        response = httpx.post(
            f"{serving}/predict",
            content=content,
            headers={**AUTH, "Content-Type": "application/json"},
        )
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    # A trip's problem names where it is.
    invalid = httpx.post(
        f"{serving}/predict",
        json={"dataset": dataset, "trips": [*TRIPS, {"dropoff_location_id": 10_001}]},
        headers=AUTH,
    ).json()
    assert invalid["errors"][0]["field"] == f"body.trips.{len(TRIPS)}.dropoff_location_id"


def test_send_requests_through_the_api_retrains_on_drift_and_serving_follows(
    stack: LocalStack, prefect: PrefectApi, api: httpx.Client
) -> None:
    """A champion fitted before the drift; trips from 2017-11 on take longer by zone. The
    replay of 2017-12 finds the live RMSE far above the champion's validation RMSE and
    starts train-model for 2018-01-01 (2017-11 to train, 2017-12 to validate), whose model
    beats the champion on 2017-12, takes the alias, and is served."""
    receiver = Receiver(failures=0)  # told of the drift and of the promotion, by webhook
    hook = api.post(
        "/webhooks", json={"url": receiver.url, "events": ["drift.detected", "model.promoted"]}
    )
    assert hook.status_code == 201, hook.text
    for month, drift in (("2017-09", 0), ("2017-10", 0), ("2017-11", 0.7), ("2017-12", 0.7)):
        parameters = {"month": month, "source": "synthetic", "drift": drift, "force": True}
        loaded = prefect.run("load-data", parameters)
        assert loaded["state"]["type"] == "COMPLETED", loaded["state"]
    before = prefect.run("train-model", {"date": "2017-11-01"})  # 2017-09 and 2017-10
    assert before["state"]["type"] == "COMPLETED", before["state"]
    wait_until(
        lambda: httpx.get(f"{stack.serving_url}/readyz").status_code == 200, 60, "a champion"
    )

    response = api.post(
        "/runs",
        json={
            "flow": "send-requests",
            "parameters": {"month": "2017-12", "rate": 200, "limit": 400, "batch": 4},
        },
    )
    assert response.status_code == 202, response.text
    sent = prefect.wait(response.json()["id"])
    assert sent["state"]["type"] == "COMPLETED", sent["state"]
    [artifact] = [a for a in prefect.artifacts(sent["id"]) if a["key"] == "fhv-live-metrics"]
    live = {row["metric"]: row["value"] for row in json.loads(artifact["data"])}
    assert (live["requests"], live["trips"], live["errors"]) == (100, 400, 0)
    assert live["live_rmse"] > 1.1 * live["validation_rmse"], live
    assert live["latency_p99_ms"] >= live["latency_p50_ms"] > 0
    assert live["mlflow_run"].startswith(f"{stack.mlflow_url}/#/experiments/")

    retrain = prefect.wait(live["retrain"], timeout=300)
    assert retrain["state"]["type"] == "COMPLETED", retrain["state"]
    assert retrain["parameters"]["date"] == "2018-01-01" and "drift" in retrain["tags"]
    [registry] = [a for a in prefect.artifacts(retrain["id"]) if a["key"] == "fhv-model-registry"]
    [row] = json.loads(registry["data"])
    assert row["alias"] == CHAMPION and row["val_month"] == "2017-12", row
    assert row["val_rmse"] < row["champion_rmse"]
    wait_until(
        lambda: _served_version(stack.serving_url) == row["version"], 60, "serving the retrained"
    )

    def told(kind: str, run_id: str) -> dict | None:
        bodies = [json.loads(body) for _, body in receiver.requests]
        return next(
            (b["data"] for b in bodies if b["type"] == kind and b["data"]["run_id"] == run_id),
            None,
        )

    drifted = wait_until(lambda: told("drift.detected", sent["id"]), 30, "drift.detected")
    assert drifted["flow"] == "send-requests" and drifted["retrain"] == retrain["id"]
    assert drifted["month"] == "2017-12" and drifted["live_rmse"] == pytest.approx(
        live["live_rmse"]
    )
    promoted = wait_until(lambda: told("model.promoted", retrain["id"]), 30, "model.promoted")
    assert promoted["flow"] == "train-model" and promoted["version"] == row["version"]
    assert promoted["model"] == "trip-duration-fhv"
    receiver.close()
    assert api.delete(f"/webhooks/{hook.json()['id']}").status_code == 204
