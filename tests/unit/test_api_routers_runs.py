"""/runs in-process, over a fake Prefect and database (testkit.apps): start, read, list,
cancel and log pages; 4xx for bad input, 404s, 503 with Prefect or the database away,
401 without a good key, and Idempotency-Key replays; and its helpers (api.routers.runs):
request hashes and `since` read as UTC."""

import asyncio
import datetime as dt
import uuid

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prefect.client.schemas.objects import State, StateType
from pydantic import TypeAdapter, ValidationError

from api.routers.runs import IsoDatetime, request_hash
from api.schemas import RunRequest
from common.results import ModelMetrics
from testkit.apps import AUTH, KEY, FakeDatabase, FakePrefect, api_app

MONTH = {"type": "string", "pattern": r"^\d{4}-\d{2}$", "description": "A month, YYYY-MM."}
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture
def prefect() -> FakePrefect:
    prefect = FakePrefect()
    prefect.add_flow("load-data", {"month": MONTH})
    prefect.add_flow("train-model", {"date": {"type": "string", "format": "date"}})
    return prefect


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def app(prefect: FakePrefect, database: FakeDatabase) -> FastAPI:
    return api_app(prefect, database)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def start(client: TestClient, key: str | None = None, **body: object) -> httpx.Response:
    headers = AUTH | ({"Idempotency-Key": key} if key else {})
    body = {"flow": "load-data", "parameters": {"month": "2021-06"}} | body
    return client.post("/runs", json=body, headers=headers)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    return body


# -- POST /runs ----------------------------------------------------------------------------


def test_a_run_is_started_and_presented(client: TestClient, prefect: FakePrefect) -> None:
    response = start(client)
    assert response.status_code == 202, response.text
    run = response.json()
    assert response.headers["location"] == run["links"]["self"]
    assert run["links"]["self"] == f"http://testserver/runs/{run['id']}"
    assert run["links"]["logs"].endswith("/logs") and run["links"]["cancel"].endswith("/cancel")
    assert (run["flow"], run["parameters"]) == ("load-data", {"month": "2021-06"})
    assert run["state"] == {"type": "SCHEDULED", "name": "Scheduled", "message": None}
    assert {"api", "caller:ci"} <= set(run["tags"])
    assert any(tag.startswith("request:") for tag in run["tags"])
    assert run["metrics"] is run["registry"] is run["error"] is None
    assert uuid.UUID(run["id"]) in prefect.flow_runs
    assert "idempotency-replayed" not in response.headers
    metrics = client.get("/metrics").text
    assert 'api_runs_triggered_total{flow="load-data"} 1.0' in metrics


def test_links_use_the_public_url_and_the_prefect_ui(
    prefect: FakePrefect, database: FakeDatabase
) -> None:
    app = api_app(
        prefect,
        database,
        api_public_url="https://api.example/",
        prefect_ui_url="https://prefect.example",
    )
    run = start(TestClient(app)).json()
    assert run["links"]["self"] == f"https://api.example/runs/{run['id']}"
    assert run["links"]["ui"] == f"https://prefect.example/runs/flow-run/{run['id']}"


def test_an_unknown_flow_is_a_404_naming_the_flows(client: TestClient) -> None:
    body = assert_problem(start(client, flow="nope"), 404, "not-found")
    assert body["detail"] == "unknown flow 'nope'; the flows are: load-data, train-model"


@pytest.mark.parametrize(
    ("parameters", "field", "message"),
    [
        ({"month": "2021-6"}, "parameters.month", "'2021-6' is not a month, YYYY-MM"),
        ({"month": 6}, "parameters.month", "6 is not of type 'string'"),
        ({"mont": "2021-06"}, "parameters.mont", "unknown parameter; allowed: month"),
    ],
)
def test_parameters_the_flow_would_refuse_are_a_422_by_field(
    client: TestClient, prefect: FakePrefect, parameters: dict, field: str, message: str
) -> None:
    body = assert_problem(start(client, parameters=parameters), 422, "validation-error")
    assert {"field": field, "message": message} in body["errors"]
    assert not prefect.flow_runs  # refused before Prefect was asked


@pytest.mark.parametrize(
    "body",
    [
        {"parameters": "x"},
        {"flow": 5},
        {"flow": "load-data", "parameters": []},
        {"flow": "x", "y": 1},
    ],
)
def test_bad_bodies_are_a_422(client: TestClient, body: dict) -> None:
    response = client.post("/runs", json=body, headers=AUTH)
    assert_problem(response, 422, "validation-error")


def test_prefect_away_is_a_503_with_retry_after(client: TestClient, prefect: FakePrefect) -> None:
    prefect.down = True
    response = start(client)
    assert_problem(response, 503, "service-unavailable")
    assert response.headers["retry-after"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_starting_a_run_needs_a_valid_key(client: TestClient, headers: dict) -> None:
    response = client.post("/runs", json={"flow": "load-data"}, headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"


# -- Idempotency-Key -----------------------------------------------------------------------


def test_a_replayed_key_returns_the_original_run(client: TestClient, prefect: FakePrefect) -> None:
    first = start(client, key="k-1")
    again = start(client, key="k-1")
    assert first.status_code == again.status_code == 202
    assert first.headers["idempotency-replayed"] == "false"
    assert again.headers["idempotency-replayed"] == "true"
    assert first.json()["id"] == again.json()["id"] and len(prefect.flow_runs) == 1
    assert 'api_runs_triggered_total{flow="load-data"} 1.0' in client.get("/metrics").text


def test_a_key_reused_for_another_request_is_a_409(client: TestClient) -> None:
    start(client, key="k-2")
    reused = start(client, key="k-2", parameters={"month": "2021-07"})
    body = assert_problem(reused, 409, "idempotency-key-reused")
    assert body["detail"] == "Idempotency-Key 'k-2' was used for a different request"


def test_keys_are_per_caller(prefect: FakePrefect) -> None:
    other = "other-key-" + "o" * 32
    app = api_app(prefect, FakeDatabase({KEY: "ci", other: "cd"}))
    client = TestClient(app)
    mine = start(client, key="shared").json()
    theirs = client.post(
        "/runs",
        json={"flow": "load-data", "parameters": {"month": "2021-07"}},
        headers={"Authorization": f"Bearer {other}", "Idempotency-Key": "shared"},
    )
    assert theirs.status_code == 202 and theirs.json()["id"] != mine["id"]


def test_a_request_that_created_no_run_leaves_its_key_free(
    client: TestClient, prefect: FakePrefect
) -> None:
    prefect.down = True
    assert start(client, key="k-3").status_code == 503
    prefect.down = False
    corrected = start(client, key="k-3", parameters={"month": "2021-07"})
    assert corrected.status_code == 202
    assert corrected.headers["idempotency-replayed"] == "false"


def test_the_database_away_is_a_503_for_a_keyed_request(
    client: TestClient, database: FakeDatabase
) -> None:
    assert start(client).status_code == 202  # the key's hash is cached from here on
    database.down = True
    assert_problem(start(client, key="k-4"), 503, "service-unavailable")
    assert start(client).status_code == 202  # no Idempotency-Key: no database needed


@pytest.mark.parametrize("key", ["", "x" * 201])
def test_an_idempotency_key_of_a_bad_length_is_a_422(client: TestClient, key: str) -> None:
    response = client.post(
        "/runs", json={"flow": "load-data"}, headers=AUTH | {"Idempotency-Key": key}
    )
    assert_problem(response, 422, "validation-error")


# -- GET /runs/{id} ------------------------------------------------------------------------


def test_a_completed_training_run_reports_its_tables(
    client: TestClient, prefect: FakePrefect
) -> None:
    run = prefect.add_run("train-model", StateType.COMPLETED, parameters={"date": "2021-08-15"})
    trained = ModelMetrics(
        train_rmse=6.5, val_rmse=7.46, train_rows=100, val_rows=90, features=12,
        train_month="2021-06 (tlc)", val_month="2021-07 (tlc)", model="/data/models/fhv/x.joblib",
    )  # fmt: skip
    prefect.artifacts[run.id] = {
        "model-metrics": trained.rows(),
        "model-registry": [
            {
                "model": "trip-duration-fhv",
                "version": "3",
                "alias": "champion",
                "val_month": "2021-07",
                "val_rmse": 7.46,
                "champion_version": "2",
                "champion_rmse": 7.9,
                "decision": "beats version 2",
                "mlflow_run": "http://mlflow/run",
                "model_version": "http://mlflow/version",
            }
        ],
    }
    body = client.get(f"/runs/{run.id}", headers=AUTH).json()
    assert body["state"]["type"] == "COMPLETED"
    assert body["metrics"] == trained.metrics() and body["metrics"]["val_rmse"] == 7.46
    assert body["model"] == "/data/models/fhv/x.joblib"
    assert body["registry"] == {
        "name": "trip-duration-fhv",
        "version": "3",
        "alias": "champion",
        "decision": "beats version 2",
        "mlflow_run": "http://mlflow/run",
        "url": "http://mlflow/version",
    }


def test_a_table_that_breaks_its_model_is_left_out_not_a_500(
    client: TestClient, prefect: FakePrefect
) -> None:
    run = prefect.add_run("train-model", StateType.COMPLETED, parameters={"date": "2021-08-15"})
    prefect.artifacts[run.id] = {"model-metrics": [{"metric": "val_rmse", "value": "n/a"}]}
    response = client.get(f"/runs/{run.id}", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["metrics"] is None and response.json()["model"] is None


def test_a_failed_run_says_why(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.FAILED, message="no such month")
    body = client.get(f"/runs/{run.id}", headers=AUTH).json()
    assert body["error"] == "no such month" and body["state"]["type"] == "FAILED"


def test_a_final_run_is_read_from_prefect_once(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.COMPLETED)
    for _ in range(3):
        assert client.get(f"/runs/{run.id}", headers=AUTH).status_code == 200
    assert prefect.records.fetches == 1
    assert "api_prefect_run_reads 1.0" in client.get("/metrics").text


def test_an_unknown_run_is_a_404_and_a_bad_id_a_422(client: TestClient) -> None:
    missing = uuid.uuid4()
    body = assert_problem(client.get(f"/runs/{missing}", headers=AUTH), 404, "not-found")
    assert body["detail"] == f"run {missing} not found"
    assert_problem(client.get("/runs/not-a-uuid", headers=AUTH), 422, "validation-error")


def test_reads_need_a_key_unless_configured_open(
    prefect: FakePrefect, database: FakeDatabase
) -> None:
    run = prefect.add_run("load-data")
    closed = TestClient(api_app(prefect, database))
    assert_problem(closed.get(f"/runs/{run.id}"), 401, "unauthorized")
    assert_problem(
        closed.get(f"/runs/{run.id}", headers={"Authorization": "Bearer wrong"}),
        401,
        "unauthorized",
    )
    open_reads = TestClient(api_app(prefect, database, api_reads_require_key=False))
    assert open_reads.get(f"/runs/{run.id}").status_code == 200
    # Writes still need one.
    assert_problem(open_reads.post(f"/runs/{run.id}/cancel"), 401, "unauthorized")


def test_reading_a_run_with_prefect_away_is_a_503(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data")
    prefect.down = True
    assert_problem(client.get(f"/runs/{run.id}", headers=AUTH), 503, "service-unavailable")


# -- GET /runs -----------------------------------------------------------------------------


def test_runs_are_listed_newest_first_and_filtered(
    client: TestClient, prefect: FakePrefect
) -> None:
    old = prefect.add_run("load-data", StateType.COMPLETED, expected=NOW - dt.timedelta(hours=2))
    new = prefect.add_run("train-model", expected=NOW - dt.timedelta(hours=1))
    every = client.get("/runs", headers=AUTH).json()
    assert [r["id"] for r in every["runs"]] == [str(new.id), str(old.id)]
    assert every["next"] is None
    assert every["runs"][0]["metrics"] is None  # lists carry no result tables

    def ids(**query: str) -> list[str]:
        return [r["id"] for r in client.get("/runs", params=query, headers=AUTH).json()["runs"]]

    assert ids(flow="load-data") == [str(old.id)]
    assert ids(state="SCHEDULED") == [str(new.id)]
    assert ids(since=(NOW - dt.timedelta(minutes=90)).isoformat()) == [str(new.id)]


def test_runs_come_in_pages(client: TestClient, prefect: FakePrefect) -> None:
    made = [prefect.add_run("load-data", expected=NOW - dt.timedelta(minutes=n)) for n in range(5)]
    seen, url = [], "/runs?limit=2"
    while url:
        page = client.get(url, headers=AUTH).json()
        assert len(page["runs"]) <= 2
        seen += [r["id"] for r in page["runs"]]
        url = page["next"]
    assert seen == [str(run.id) for run in made]


def test_no_flows_is_an_empty_list(database: FakeDatabase) -> None:
    response = TestClient(api_app(FakePrefect(), database)).get("/runs", headers=AUTH)
    assert response.json() == {"runs": [], "next": None}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("flow=nope", "query.flow"),
        ("state=DONE", "query.state"),
        ("since=1e9", "query.since"),
        ("limit=0", "query.limit"),
        ("limit=101", "query.limit"),
        ("cursor=garbage", "query.cursor"),
    ],
)
def test_bad_queries_are_a_422_by_field(client: TestClient, query: str, field: str) -> None:
    body = assert_problem(client.get(f"/runs?{query}", headers=AUTH), 422, "validation-error")
    assert field in [error["field"] for error in body["errors"]]


def test_listing_with_prefect_away_is_a_503(client: TestClient, prefect: FakePrefect) -> None:
    prefect.down = True
    assert_problem(client.get("/runs", headers=AUTH), 503, "service-unavailable")


# -- POST /runs/{id}/cancel ----------------------------------------------------------------


def test_cancel_a_run_and_again(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    first = client.post(f"/runs/{run.id}/cancel", headers=AUTH)
    assert first.status_code == 202, first.text
    assert first.json()["state"]["type"] == "CANCELLING"
    again = client.post(f"/runs/{run.id}/cancel", headers=AUTH)  # idempotent
    assert again.status_code == 202 and again.json()["state"]["type"] == "CANCELLING"
    # The cached record was dropped: a read shows the cancel at once.
    assert client.get(f"/runs/{run.id}", headers=AUTH).json()["state"]["type"] == "CANCELLING"


def test_a_finished_run_cannot_be_cancelled(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.COMPLETED)
    body = assert_problem(client.post(f"/runs/{run.id}/cancel", headers=AUTH), 409, "run-is-final")
    assert "already COMPLETED" in body["detail"]


def test_cancelling_an_unknown_run_is_a_404(client: TestClient) -> None:
    response = client.post(f"/runs/{uuid.uuid4()}/cancel", headers=AUTH)
    assert_problem(response, 404, "not-found")


# -- POST /runs/{id}/retry ---------------------------------------------------------------


@pytest.mark.parametrize("state", [StateType.FAILED, StateType.CRASHED, StateType.CANCELLED])
def test_a_retry_is_a_new_run_linked_both_ways(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase, state: StateType
) -> None:
    operator = database.add_key("op", "operator")
    original = prefect.add_run(
        "load-data", state, parameters={"month": "2021-06"}, tags=["api", "caller:ci"]
    )
    # Read (and cached) before the retry: the retry's link shows at once all the same.
    assert client.get(f"/runs/{original.id}", headers=AUTH).json()["retries"] == []
    response = client.post(
        f"/runs/{original.id}/retry", headers={"Authorization": f"Bearer {operator}"}
    )
    assert response.status_code == 202, response.text
    retry = response.json()
    assert response.headers["Idempotency-Replayed"] == "false"
    assert response.headers["location"] == retry["links"]["self"]
    assert (retry["flow"], retry["parameters"]) == ("load-data", {"month": "2021-06"})
    assert retry["state"]["type"] == "SCHEDULED" and retry["id"] != str(original.id)
    assert retry["retry_of"] == str(original.id) and retry["retries"] == []
    assert {"api", "caller:op", f"retry-of:{original.id}"} <= set(retry["tags"])
    again = client.get(f"/runs/{original.id}", headers=AUTH).json()
    assert again["retries"] == [retry["id"]] and again["retry_of"] is None
    assert again["links"]["retry"] == f"http://testserver/runs/{original.id}/retry"
    read = client.get(f"/runs/{retry['id']}", headers=AUTH).json()
    assert read["retry_of"] == str(original.id)
    metrics = client.get("/metrics").text
    assert 'api_runs_triggered_total{flow="load-data"} 1.0' in metrics


def test_a_second_retry_is_the_first_unless_forced(
    client: TestClient, prefect: FakePrefect
) -> None:
    original = prefect.add_run("load-data", StateType.FAILED, parameters={"month": "2021-06"})
    first = client.post(f"/runs/{original.id}/retry", headers=AUTH)
    second = client.post(f"/runs/{original.id}/retry", headers=AUTH)
    assert second.status_code == 202 and second.json()["id"] == first.json()["id"]
    assert second.headers["Idempotency-Replayed"] == "true"
    forced = client.post(f"/runs/{original.id}/retry?force=true", headers=AUTH)
    assert forced.headers["Idempotency-Replayed"] == "false"
    assert forced.json()["id"] != first.json()["id"]
    listed = client.get(f"/runs/{original.id}", headers=AUTH).json()["retries"]
    assert sorted(listed) == sorted([first.json()["id"], forced.json()["id"]])
    assert len(prefect.flow_runs) == 3
    metrics = client.get("/metrics").text
    assert 'api_runs_triggered_total{flow="load-data"} 2.0' in metrics


@pytest.mark.parametrize(
    "state", [StateType.COMPLETED, StateType.RUNNING, StateType.SCHEDULED, StateType.CANCELLING]
)
def test_only_failed_crashed_or_cancelled_runs_are_retried(
    client: TestClient, prefect: FakePrefect, state: StateType
) -> None:
    run = prefect.add_run("load-data", state, parameters={"month": "2021-06"})
    response = client.post(f"/runs/{run.id}/retry", headers=AUTH)
    body = assert_problem(response, 409, "run-not-retryable")
    assert f"is {state.value}; only failed, crashed or cancelled" in body["detail"]
    assert len(prefect.flow_runs) == 1


def test_a_run_whose_parameters_no_longer_fit_is_not_retried(
    client: TestClient, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.FAILED, parameters={"month": "June"})
    body = assert_problem(
        client.post(f"/runs/{run.id}/retry", headers=AUTH), 409, "run-not-retryable"
    )
    assert "parameters no longer fit flow 'load-data'" in body["detail"]
    assert body["errors"][0]["field"] == "parameters.month"
    assert len(prefect.flow_runs) == 1


def test_a_run_of_a_flow_the_api_does_not_run_is_not_retried(
    client: TestClient, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.FAILED, parameters={"month": "2021-06"})
    del prefect.deployments["load-data"]
    body = assert_problem(
        client.post(f"/runs/{run.id}/retry", headers=AUTH), 409, "run-not-retryable"
    )
    assert "not started from a flow the API runs" in body["detail"]


def test_retrying_needs_an_operator_and_a_known_run(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    viewer = database.add_key("looker", "viewer")
    run = prefect.add_run("load-data", StateType.FAILED, parameters={"month": "2021-06"})
    response = client.post(f"/runs/{run.id}/retry", headers={"Authorization": f"Bearer {viewer}"})
    assert_problem(response, 403, "forbidden")
    assert_problem(client.post(f"/runs/{uuid.uuid4()}/retry", headers=AUTH), 404, "not-found")
    prefect.down = True
    assert_problem(client.post(f"/runs/{run.id}/retry", headers=AUTH), 503, "service-unavailable")
    assert len(prefect.flow_runs) == 1


# -- GET /runs/{id}/logs -------------------------------------------------------------------


def test_log_lines_in_pages_until_the_run_settled(client: TestClient, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.COMPLETED)
    ended = NOW - dt.timedelta(hours=1)
    run.state = State(type=StateType.COMPLETED, timestamp=ended)
    for n in range(5):
        prefect.add_log(run, f"line {n}", ended - dt.timedelta(minutes=5 - n))
    seen, url = [], f"/runs/{run.id}/logs?limit=2"
    while url:
        page = client.get(url, headers=AUTH).json()
        seen += [line["message"] for line in page["lines"]]
        url = page["next"]
    assert seen == [f"line {n}" for n in range(5)]


def test_a_running_runs_log_always_has_a_next_page(
    client: TestClient, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    page = client.get(f"/runs/{run.id}/logs", headers=AUTH).json()
    assert page["lines"] == [] and page["next"]


def test_logs_of_an_unknown_run_are_a_404(client: TestClient) -> None:
    assert_problem(client.get(f"/runs/{uuid.uuid4()}/logs", headers=AUTH), 404, "not-found")


def test_request_hash_ignores_key_order_but_not_values() -> None:
    a = RunRequest(flow="train-model", parameters={"date": "2021-08-15", "auto_load": True})
    b = RunRequest(flow="train-model", parameters={"auto_load": True, "date": "2021-08-15"})
    c = RunRequest(flow="train-model", parameters={"date": "2021-08-16", "auto_load": True})
    assert request_hash(a) == request_hash(b) != request_hash(c)


SINCE = TypeAdapter(IsoDatetime)


@pytest.mark.parametrize(
    "value",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00", "1e9"],
)
def test_since_the_backend_could_not_take_is_refused(value: str) -> None:
    with pytest.raises(ValidationError):
        SINCE.validate_python(value)


def test_since_is_read_as_utc() -> None:
    assert SINCE.validate_python("2021-08-15T02:00:00+02:00") == dt.datetime(
        2021, 8, 15, tzinfo=dt.UTC
    )
    assert SINCE.validate_python("2021-08-15T00:00:00") == dt.datetime(2021, 8, 15, tzinfo=dt.UTC)


# -- GET /runs/{id}?wait= --------------------------------------------------------------------


async def _wait_for(app: FastAPI, run_id: uuid.UUID, wait: float) -> tuple[httpx.Response, float]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
        began = asyncio.get_running_loop().time()
        response = await http.get(f"/runs/{run_id}", params={"wait": wait}, headers=AUTH)
        return response, asyncio.get_running_loop().time() - began


@pytest.mark.anyio
async def test_a_waiter_is_answered_when_the_run_s_event_comes(
    app: FastAPI, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    events = app.state.run_events
    events.live = True  # as when subscribed: no poll before LIVE_RECHECK_SECONDS (5 s)

    async def finish() -> None:
        await asyncio.sleep(0.3)
        prefect.flow_runs[run.id].state = State(type=StateType.COMPLETED)
        events.wake(run.id)

    finishing = asyncio.create_task(finish())
    response, took = await _wait_for(app, run.id, 30)
    await finishing
    assert response.status_code == 200 and response.json()["state"]["type"] == "COMPLETED"
    assert 0.3 <= took < 4  # the event, not a poll, ended the wait


@pytest.mark.anyio
async def test_a_waiter_gets_the_state_at_its_deadline(app: FastAPI, prefect: FakePrefect) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    response, took = await _wait_for(app, run.id, 0.5)
    assert response.status_code == 200 and response.json()["state"]["type"] == "RUNNING"
    assert took >= 0.5


@pytest.mark.anyio
async def test_without_events_a_waiter_polls_and_still_sees_the_end(
    app: FastAPI, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    assert not app.state.run_events.live  # the subscription is down: waiters poll

    async def finish() -> None:
        await asyncio.sleep(0.3)
        prefect.flow_runs[run.id].state = State(type=StateType.FAILED, message="no month")

    finishing = asyncio.create_task(finish())
    response, took = await _wait_for(app, run.id, 10)
    await finishing
    assert response.json()["state"]["type"] == "FAILED" and took < 5
    assert prefect.records.fetches <= 4  # a poll a second shares the cache, not a read per loop


@pytest.mark.anyio
async def test_a_final_run_is_answered_at_once_and_an_unknown_one_is_a_404(
    app: FastAPI, prefect: FakePrefect
) -> None:
    run = prefect.add_run("load-data", StateType.CANCELLED)
    response, took = await _wait_for(app, run.id, 60)
    assert response.json()["state"]["type"] == "CANCELLED" and took < 1
    response, _ = await _wait_for(app, uuid.uuid4(), 60)
    assert_problem(response, 404, "not-found")


@pytest.mark.parametrize("wait", ["61", "-1", "nan", "inf", "soon", "1e400"])
def test_a_wait_out_of_0_to_60_seconds_is_a_422(
    client: TestClient, prefect: FakePrefect, wait: str
) -> None:
    run = prefect.add_run("load-data", StateType.RUNNING)
    body = assert_problem(
        client.get(f"/runs/{run.id}", params={"wait": wait}, headers=AUTH), 422, "validation-error"
    )
    assert [error["field"] for error in body["errors"]] == ["query.wait"], body


@pytest.mark.anyio
async def test_a_wait_longer_than_the_api_s_maximum_ends_at_the_maximum(
    prefect: FakePrefect, database: FakeDatabase
) -> None:
    app = api_app(prefect, database, api_wait_max_seconds=0.5)
    run = prefect.add_run("load-data", StateType.RUNNING)
    response, took = await _wait_for(app, run.id, 60)
    assert response.status_code == 200 and response.json()["state"]["type"] == "RUNNING"
    assert 0.5 <= took < 3
