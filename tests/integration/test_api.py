"""The API service against a real Prefect server, worker and PostgreSQL."""

import asyncio
import concurrent.futures
import datetime as dt
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import psycopg2
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings

from api import prefect_gateway
from api.prefect_gateway import PrefectGateway
from api.run_events import RunEvents
from common.web.problems import Problem
from devstack.stack import LocalStack, free_port
from integration.conftest import API_KEY
from testkit import sse
from testkit.faults import FaultyProxy
from testkit.metrics import parse_metrics
from testkit.prefect_api import PrefectApi
from testkit.tlc import TlcServer
from trainer.datasets import DATASETS

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def follow(api: httpx.Client, run_id: str, until: set[str], timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api.get(f"/runs/{run_id}").json()
        if run["state"]["type"] in until:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['state']} after {timeout:.0f} s")
        time.sleep(0.3)


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status and body["detail"]
    assert body["request_id"] == response.headers["X-Request-ID"]
    return body


# -- auth ------------------------------------------------------------------------------


def test_no_key_wrong_key_and_reads(stack: LocalStack) -> None:
    with httpx.Client(base_url=stack.service_url) as anonymous:
        response = anonymous.post("/runs", json={})
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert_problem(anonymous.get("/runs"), 401, "unauthorized")
        wrong = {"Authorization": "Bearer not-the-key"}
        assert_problem(anonymous.post("/runs", json={}, headers=wrong), 401, "unauthorized")
        assert_problem(
            anonymous.get("/runs", headers={"Authorization": "Basic eDp5"}), 401, "unauthorized"
        )
        assert anonymous.get("/healthz").status_code == 200


def test_keys_are_stored_hashed(stack: LocalStack) -> None:
    with psycopg2.connect(stack.env["DATABASE_URL"]) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT name, key_sha256 FROM api_keys")
        rows = dict(cursor.fetchall())
    assert "env" in rows
    assert API_KEY not in rows.values() and len(rows["env"]) == 64


# -- bad input -------------------------------------------------------------------------


def test_bad_dates_and_unknown_parameters_are_422_with_fields(api: httpx.Client) -> None:
    body = assert_problem(
        api.post("/runs", json={"flow": "train-model", "parameters": {"date": "2021-02-30"}}),
        422,
        "validation-error",
    )
    assert body["errors"] == [
        {"field": "parameters.date", "message": "'2021-02-30' is not a valid YYYY-MM-DD date"}
    ]
    body = assert_problem(
        api.post("/runs", json={"parameters": {"dataset": "purple", "colour": 1}}),
        422,
        "validation-error",
    )
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"parameters.colour", "parameters.dataset"}
    body = assert_problem(
        api.post("/runs", content=b"{not json", headers={"content-type": "application/json"}),
        422,
        "validation-error",
    )
    assert body["errors"]
    # The month rule is the flow's own (its parameter schema), the one the trainer applies.
    body = assert_problem(
        api.post("/runs", json={"flow": "load-data", "parameters": {"month": "2021-6"}}),
        422,
        "validation-error",
    )
    assert body["errors"] == [
        {"field": "parameters.month", "message": "'2021-6' is not a month, YYYY-MM"}
    ]
    body = assert_problem(
        api.post("/runs", content=b'{"flow": "train-model"}', headers={"content-type": ""}),
        422,
        "validation-error",
    )
    assert "Content-Type: application/json" in body["detail"]
    assert body["errors"][0]["field"] == "header.content-type"


def test_unknown_flow_and_run_are_404(api: httpx.Client) -> None:
    body = assert_problem(api.post("/runs", json={"flow": "deploy-rockets"}), 404, "not-found")
    assert "the flows are: load-data, probe, send-requests, train-model" in body["detail"]
    body = assert_problem(
        api.get("/runs", params={"flow": "deploy-rockets"}), 422, "validation-error"
    )
    assert body["errors"][0]["field"] == "query.flow"
    assert_problem(api.get(f"/runs/{uuid.uuid4()}"), 404, "not-found")
    assert_problem(api.post(f"/runs/{uuid.uuid4()}/cancel"), 404, "not-found")
    assert_problem(api.get(f"/runs/{uuid.uuid4()}/logs"), 404, "not-found")
    assert_problem(api.get("/runs/not-a-uuid"), 422, "validation-error")
    assert_problem(api.get("/runs", params={"cursor": "garbage"}), 422, "validation-error")
    body = assert_problem(
        api.get(f"/runs/{uuid.uuid4()}/logs", params={"cursor": "e30="}), 422, "validation-error"
    )
    assert body["errors"][0]["field"] == "query.cursor"


def test_body_too_large_is_413(api: httpx.Client) -> None:
    huge = {"flow": "train-model", "parameters": {"date": "x" * 100_000}}
    assert_problem(api.post("/runs", json=huge), 413, "payload-too-large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"flow": "train-model", "parameters": {"date": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}}'

    response = api.post("/runs", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "payload-too-large")
    # A small chunked body is read as any other.
    small = api.post(
        "/runs",
        content=iter([b'{"flow": "train-model", ', b'"parameters": {"date": "2021-02-30"}}']),
        headers={"content-type": "application/json"},
    )
    assert_problem(small, 422, "validation-error")


def test_flows_are_the_deployments_on_the_pool(api: httpx.Client) -> None:
    flows = {flow["name"]: flow for flow in api.get("/flows").json()}
    assert set(flows) == {"load-data", "probe", "send-requests", "train-model"}
    assert flows["probe"]["deployment"] == "probe/monthly"
    assert flows["train-model"]["parameters"]["properties"]["date"]["anyOf"][0] == {
        "format": "date",
        "type": "string",
    }
    # Any flow on the pool runs, without an edit to the API: probe is one.
    run = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 0}})
    assert run.status_code == 202, run.text
    assert run.json()["flow"] == "probe"
    assert "scheduled" not in run.json()["tags"]  # the deployments' tags say what, not how
    assert follow(api, run.json()["id"], FINAL)["state"]["type"] == "COMPLETED"
    assert_problem(
        api.post("/runs", json={"flow": "probe", "parameters": {"seconds": -1}}),
        422,
        "validation-error",
    )


def test_a_changed_deployment_is_seen_at_once_and_the_flows_are_kept_until_one_changes(
    stack: LocalStack, api: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The running API sees a deployment's change within about a second (its event), not at
    the end of a cache's time; a gateway following the events keeps its list of the flows
    past FLOWS_CACHE_SECONDS until one does."""
    monkeypatch.setattr(prefect_gateway, "FLOWS_CACHE_SECONDS", 0.2)  # this process's gateway

    async def scenario() -> tuple[int, int, float]:
        async with PrefectClient(api=stack.api_url) as client:
            gateway = PrefectGateway(client, "monthly", "training")
            events = RunEvents()
            gateway.deployments_fresh_after = events.deployments_fresh_after
            with temporary_settings({PREFECT_API_URL: stack.api_url}):
                following = asyncio.create_task(events.run())
                try:
                    deadline = time.monotonic() + 30
                    while not events.live and time.monotonic() < deadline:
                        await asyncio.sleep(0.05)
                    assert events.live, "no subscription to Prefect's events within 30 s"
                    # The subscription opens with the last hour's events, the registration's
                    # deployment events among them: let them pass and settle.
                    await asyncio.sleep(0.5)
                    while (fresh_after := events.deployments_fresh_after()) is not None and (
                        fresh_after > time.monotonic()
                    ):
                        await asyncio.sleep(0.05)
                    probe = (await gateway.flows())["probe"]
                    reads = gateway._catalogue.fetches
                    await asyncio.sleep(0.5)
                    await gateway.flows()  # kept, though older than FLOWS_CACHE_SECONDS
                    kept = gateway._catalogue.fetches - reads
                    assert api.get("/flows").status_code == 200  # the API's copy, read now
                    changed = f"changed by a test {uuid.uuid4()}"
                    await client.update_deployment(probe.id, DeploymentUpdate(description=changed))
                    began = time.monotonic()
                    try:
                        seen = None
                        while time.monotonic() - began < 10 and seen != changed:
                            flows = {f["name"]: f for f in api.get("/flows").json()}
                            seen = flows["probe"]["description"]
                            await asyncio.sleep(0.05)
                        api_saw = time.monotonic() - began
                        while (await gateway.flows())["probe"].description != changed:
                            assert time.monotonic() - began < 10, "the gateway never saw it"
                            await asyncio.sleep(0.05)
                    finally:
                        update = DeploymentUpdate(description=probe.description)
                        await client.update_deployment(probe.id, update)
                    return kept, gateway._catalogue.fetches - reads, api_saw
                finally:
                    following.cancel()

    kept, reads, api_saw = asyncio.run(scenario())
    # Within the event's way and the settling time (DEPLOYMENT_SETTLE_SECONDS, 1 s), not
    # FLOWS_CACHE_SECONDS (5 s) of the API's own copy, read just before the change.
    assert api_saw < 3.0, f"the API saw the change {api_saw:.1f} s after it"
    assert kept == 0
    assert reads >= 1  # read again once the deployment's event came


# -- the happy path --------------------------------------------------------------------


def test_trigger_training_and_read_back_metrics(api: httpx.Client, prefect: PrefectApi) -> None:
    request_id = f"test-{uuid.uuid4().hex[:8]}"
    response = api.post(
        "/runs",
        json={
            "flow": "train-model",
            "parameters": {"date": "2023-03-15", "auto_load": True, "source": "synthetic"},
        },
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 202, response.text
    assert response.headers["X-Request-ID"] == request_id
    run = response.json()
    assert response.headers["Location"].endswith(f"/runs/{run['id']}")
    assert run["flow"] == "train-model" and run["parameters"]["date"] == "2023-03-15"
    assert {"api", "caller:env", f"request:{request_id}"} <= set(run["tags"])

    done = follow(api, run["id"], {"COMPLETED", "FAILED", "CRASHED"})
    assert done["state"]["type"] == "COMPLETED", done
    assert done["metrics"]["val_rmse"] > 0 and done["metrics"]["features"] > 0
    assert done["metrics"]["train_month"] == "2023-01 (synthetic)"
    assert done["model"].endswith(f"{run['id']}.joblib")
    registry = done["registry"]
    assert registry["name"] == "trip-duration-fhv"
    assert registry["alias"] in ("champion", "challenger")
    assert registry["url"].endswith(f"/#/models/trip-duration-fhv/versions/{registry['version']}")
    assert "validation RMSE" in registry["decision"]
    assert done["started"] and done["ended"] and done["error"] is None

    logs = api.get(f"/runs/{run['id']}/logs", params={"limit": 2}).json()
    assert len(logs["lines"]) == 2 and logs["next"]
    second = api.get(logs["next"]).json()
    assert second["lines"] and second["lines"][0] != logs["lines"][0]


def test_failed_run_reports_why(api: httpx.Client) -> None:
    run = api.post("/runs", json={"parameters": {"date": "2018-05-15"}}).json()
    done = follow(api, run["id"], {"COMPLETED", "FAILED", "CRASHED"})
    assert done["state"]["type"] == "FAILED"
    assert "fhv data for 2018-03 is not in the data store" in done["error"]
    assert done["metrics"] is None


def test_a_failed_run_is_retried_once_and_linked_both_ways(api: httpx.Client) -> None:
    run = api.post("/runs", json={"parameters": {"date": "2018-05-15"}}).json()
    assert_problem(api.post(f"/runs/{run['id']}/retry"), 409, "run-not-retryable")  # running
    failed = api.get(f"/runs/{run['id']}", params={"wait": 60}).json()
    assert failed["state"]["type"] == "FAILED" and failed["retries"] == []

    # Racing retries of one run make one run (Prefect's idempotency key).
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: api.post(f"/runs/{run['id']}/retry"), range(4)))
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert sorted(a.headers["Idempotency-Replayed"] for a in answers) == ["false"] + ["true"] * 3
    retry = answers[0].json()
    assert retry["retry_of"] == run["id"] and retry["parameters"] == {"date": "2018-05-15"}
    assert f"retry-of:{run['id']}" in retry["tags"]

    again = api.get(f"/runs/{retry['id']}", params={"wait": 60}).json()
    assert again["state"]["type"] == "FAILED" and again["retry_of"] == run["id"]
    assert api.get(f"/runs/{run['id']}").json()["retries"] == [retry["id"]]
    forced = api.post(f"/runs/{run['id']}/retry", params={"force": "true"})
    assert forced.status_code == 202 and forced.json()["id"] != retry["id"]
    assert api.get(f"/runs/{run['id']}").json()["retries"] == [retry["id"], forced.json()["id"]]
    api.post(f"/runs/{forced.json()['id']}/cancel")


def test_list_runs_with_filters_and_pages(api: httpx.Client) -> None:
    page = api.get("/runs", params={"flow": "train-model", "state": "COMPLETED", "limit": 1})
    assert page.status_code == 200, page.text
    body = page.json()
    assert [r["state"]["type"] for r in body["runs"]] == ["COMPLETED"]
    assert all(r["flow"] == "train-model" for r in body["runs"])
    everything = api.get("/runs", params={"limit": 100}).json()["runs"]
    assert len(everything) >= 2
    first_two = api.get("/runs", params={"limit": 1}).json()
    following = api.get(first_two["next"]).json()
    assert following["runs"][0]["id"] != first_two["runs"][0]["id"]
    future = api.get("/runs", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future == {"runs": [], "next": None}
    assert_problem(api.get("/runs", params={"state": "EXPLODED"}), 422, "validation-error")


# -- stable pages ----------------------------------------------------------------------


def _line(entry: dict[str, Any]) -> tuple[dt.datetime, int, str]:
    return dt.datetime.fromisoformat(entry["timestamp"]), entry["level"], entry["message"]


def test_log_pages_read_while_the_run_writes_miss_nothing_and_repeat_nothing(
    api: httpx.Client, prefect: PrefectApi
) -> None:
    # 150 lines over 8 s: Prefect receives them in batches every 2 s, the worker's own lines
    # in batches of their own, while the client pages 7 at a time.
    params = {"seconds": 8, "lines": 150}
    run = api.post("/runs", json={"flow": "probe", "parameters": params}).json()
    url: str | None = f"/runs/{run['id']}/logs?limit=7"
    got, while_running, deadline = [], 0, time.monotonic() + 180
    while url is not None:
        assert time.monotonic() < deadline, f"still paging after 180 s: {len(got)} lines"
        page = api.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        got += [_line(entry) for entry in body["lines"]]
        if api.get(f"/runs/{run['id']}").json()["state"]["type"] not in FINAL:
            while_running += len(body["lines"])
        url = body["next"]
        if len(body["lines"]) < 7:
            time.sleep(0.3)  # caught up: wait for the next batch
    assert while_running >= 20, "the pages were not read while the run wrote"
    response = prefect.http.post(
        "/logs/filter", json={"logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200}
    )
    everything = [_line(entry) for entry in response.json()]
    assert len(got) == len(set(got)), "a line came twice"
    assert sorted(got) == sorted(everything)
    assert sum("probe: line" in message for _, _, message in got) == 150


def test_run_pages_stay_put_while_runs_are_created(api: httpx.Client) -> None:
    for _ in range(3):  # enough runs for a few pages
        api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 0}})
    before = api.get("/runs", params={"flow": "probe", "limit": 100}).json()
    assert before["next"] is None, "more than 100 probe runs: the test needs another flow"
    listed, created = [], []
    url: str | None = "/runs?flow=probe&limit=2"
    while url is not None:
        body = api.get(url).json()
        listed += [run["id"] for run in body["runs"]]
        url = body["next"]
        # A new run between two reads: it heads the list, and neither shifts nor repeats it.
        created.append(
            api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 0}}).json()["id"]
        )
    assert listed == [run["id"] for run in before["runs"]]
    assert not set(created) & set(listed)
    # A cursor is for the list that gave it out.
    cursor = httpx.URL(api.get("/runs", params={"flow": "probe", "limit": 1}).json()["next"])
    other = api.get("/runs", params={"flow": "train-model", "cursor": cursor.params["cursor"]})
    assert assert_problem(other, 422, "validation-error")["errors"][0]["field"] == "query.cursor"


# -- idempotency -----------------------------------------------------------------------


def test_idempotent_replay_and_reuse(api: httpx.Client) -> None:
    key = {"Idempotency-Key": f"replay-{uuid.uuid4()}"}
    body = {"flow": "load-data", "parameters": {"month": "2019-01", "source": "synthetic"}}
    first = api.post("/runs", json=body, headers=key)
    assert first.status_code == 202 and first.headers["Idempotency-Replayed"] == "false"
    again = api.post("/runs", json=body, headers=key)
    assert again.status_code == 202 and again.headers["Idempotency-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = {"flow": "load-data", "parameters": {"month": "2019-02", "source": "synthetic"}}
    assert_problem(api.post("/runs", json=other, headers=key), 409, "idempotency-key-reused")


def test_fifty_concurrent_identical_requests_create_one_run(
    api: httpx.Client, stack: LocalStack, prefect: PrefectApi
) -> None:
    deployment_id = prefect.deployment("load-data")["id"]
    before = prefect.http.post(
        "/flow_runs/count", json={"deployments": {"id": {"any_": [deployment_id]}}}
    ).json()
    key = {"Idempotency-Key": f"race-{uuid.uuid4()}", "Authorization": f"Bearer {API_KEY}"}
    body = {"flow": "load-data", "parameters": {"month": "2019-03", "source": "synthetic"}}

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=stack.service_url, timeout=60) as client:
            return client.post("/runs", json=body, headers=key)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(post, range(50)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses][:3]
    assert len({r.json()["id"] for r in responses}) == 1
    replayed = [r.headers["Idempotency-Replayed"] for r in responses]
    assert replayed.count("false") == 1  # the one that created the run
    after = prefect.http.post(
        "/flow_runs/count", json={"deployments": {"id": {"any_": [deployment_id]}}}
    ).json()
    assert after - before == 1


# -- bad input and failed creations -----------------------------------------------------

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    "body",
    [
        # What Python's json.dumps sends for float("nan") and float("inf").
        b'{"flow": "load-data", "parameters": {"month": "2021-06", "drift": NaN}}',
        b'{"flow": "probe", "parameters": {"seconds": Infinity}}',
        b'{"flow": "send-requests", "parameters": {"rate": -Infinity}}',
        b'{"flow": "send-requests", "parameters": {"rate": 1e400}}',
    ],
)
def test_nan_and_infinities_are_a_422_not_a_500(api: httpx.Client, body: bytes) -> None:
    problem = assert_problem(api.post("/runs", content=body, headers=JSON), 422, "validation-error")
    assert problem["errors"][0]["field"] == "body"
    assert "NaN and infinite numbers are not JSON numbers" in problem["detail"]


@pytest.mark.parametrize("month", ["2021-06\n", "\uff12\uff10\uff12\uff11-06", " 2021-06"])
def test_months_the_flow_would_refuse_are_refused_first(api: httpx.Client, month: str) -> None:
    body = {"flow": "load-data", "parameters": {"month": month, "source": "synthetic"}}
    problem = assert_problem(api.post("/runs", json=body), 422, "validation-error")
    assert problem["errors"] == [
        {"field": "parameters.month", "message": f"{month!r} is not a month, YYYY-MM"}
    ]


def test_prefect_refusing_parameters_stays_a_4xx(stack: LocalStack) -> None:
    """Past our own check (called on the gateway directly), Prefect's 409 is a 422."""

    async def create() -> Problem:
        async with PrefectClient(api=stack.api_url) as client:
            gateway = PrefectGateway(client, "monthly", "training")
            deployment = await gateway.deployment("probe")
            with pytest.raises(Problem) as caught:
                await gateway.create_run(deployment, {"seconds": "soon"}, ["test"], None)
            return caught.value

    problem = asyncio.run(create())
    assert (problem.status, problem.slug) == (422, "validation-error")
    assert problem.detail.startswith("Prefect refused the request:") and "seconds" in problem.detail


@pytest.fixture(scope="module")
def faulty(stack: LocalStack) -> Iterator[tuple[FaultyProxy, httpx.Client]]:
    """An API process that reaches the real Prefect through a proxy that can fail a step."""
    proxy = FaultyProxy(stack.api_url.removesuffix("/api"))
    port, name = free_port(), "api-faulty-prefect"
    stack.start_service(
        name,
        ["python", "-m", "api"],
        env={"API_PORT": str(port), "PREFECT_API_URL": f"{proxy.url}/api"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 200, 60, name)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(base_url=url, headers=auth, timeout=30) as client:
            yield proxy, client
    finally:
        stack.stop_service(name)
        proxy.close()


def triggered(api: httpx.Client, flow: str) -> float:
    return parse_metrics(api.get("/metrics").text, "api_").get(
        f'api_runs_triggered_total{{flow="{flow}"}}', 0.0
    )


def test_a_request_that_created_no_run_does_not_use_up_its_key(
    faulty: tuple[FaultyProxy, httpx.Client],
) -> None:
    proxy, api = faulty
    key = {"Idempotency-Key": f"failed-{uuid.uuid4()}"}
    body = {"flow": "probe", "parameters": {"seconds": 0}}
    before = triggered(api, "probe")
    proxy.fail("/create_flow_run", 500)  # Prefect failing: a 503 for us, and no run
    assert_problem(api.post("/runs", json=body, headers=key), 503, "service-unavailable")
    retry = api.post("/runs", json=body, headers=key)
    assert retry.status_code == 202 and retry.headers["Idempotency-Replayed"] == "false"
    assert triggered(api, "probe") == before + 1
    again = api.post("/runs", json=body, headers=key)
    assert again.headers["Idempotency-Replayed"] == "true"
    assert again.json()["id"] == retry.json()["id"]
    assert triggered(api, "probe") == before + 1


def test_a_refused_request_leaves_its_key_to_the_corrected_one(
    faulty: tuple[FaultyProxy, httpx.Client],
) -> None:
    proxy, api = faulty
    key = {"Idempotency-Key": f"refused-{uuid.uuid4()}"}
    proxy.fail("/create_flow_run", 409, detail="Validation failed for field 'seconds'")
    refused = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 0}}, headers=key)
    problem = assert_problem(refused, 422, "validation-error")
    assert "Validation failed for field 'seconds'" in problem["detail"]
    corrected = {"flow": "probe", "parameters": {"seconds": 0.5}}
    created = api.post("/runs", json=corrected, headers=key)
    assert created.status_code == 202, created.text
    assert created.headers["Idempotency-Replayed"] == "false"
    assert created.json()["parameters"] == {"seconds": 0.5}
    # Now bound to a run: the key holds it against a different request.
    other = {"flow": "probe", "parameters": {"seconds": 0}}
    assert_problem(api.post("/runs", json=other, headers=key), 409, "idempotency-key-reused")


# -- cancelling ------------------------------------------------------------------------


def test_cancel_a_running_run(api: httpx.Client, tlc: TlcServer) -> None:
    tlc.publish_slow(DATASETS["fhv"], "2017-06", rows=50_000)
    run = api.post("/runs", json={"flow": "load-data", "parameters": {"month": "2017-06"}}).json()
    follow(api, run["id"], {"RUNNING"}, timeout=60)
    cancelled = api.post(f"/runs/{run['id']}/cancel")
    assert cancelled.status_code == 202, cancelled.text
    assert cancelled.json()["state"]["type"] in {"CANCELLING", "CANCELLED"}
    again = api.post(f"/runs/{run['id']}/cancel")  # idempotent while cancelling
    assert again.status_code in {202, 409}, again.text
    done = follow(api, run["id"], {"CANCELLED", "COMPLETED", "FAILED", "CRASHED"}, timeout=60)
    assert done["state"]["type"] == "CANCELLED"
    body = assert_problem(api.post(f"/runs/{run['id']}/cancel"), 409, "run-is-final")
    assert "already CANCELLED" in body["detail"]


# -- operations ------------------------------------------------------------------------


def _prefect_run_reads(api: httpx.Client) -> float:
    [line] = [
        x for x in api.get("/metrics").text.splitlines() if x.startswith("api_prefect_run_reads ")
    ]
    return float(line.split()[1])


def test_a_final_run_is_read_from_prefect_once(api: httpx.Client) -> None:
    run = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 0}}).json()
    done = follow(api, run["id"], FINAL)
    before = _prefect_run_reads(api)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        reads = list(pool.map(lambda _: api.get(f"/runs/{run['id']}").json(), range(40)))
    assert all(read == done for read in reads)
    assert _prefect_run_reads(api) == before


def test_metrics_count_requests_and_triggered_runs(api: httpx.Client) -> None:
    text = api.get("/metrics").text
    assert 'api_requests_total{method="POST",route="/runs",status="202"}' in text
    assert 'api_runs_triggered_total{flow="train-model"}' in text
    assert "api_request_duration_seconds_bucket" in text


def test_ready(api: httpx.Client) -> None:
    ready = api.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"prefect": "ok", "database": "ok"}}


def test_a_waiter_is_answered_within_a_second_of_the_run_ending(
    stack: LocalStack, api: httpx.Client, prefect: PrefectApi
) -> None:
    """GET /runs/{id}?wait= ends on Prefect's event, not on the cache's 1 s or a poll."""
    log = stack.log_dir / "api.log"
    stack.wait_until(lambda: "following flow-run events" in log.read_text(), 60, "events")
    lags = []
    for seconds in (2, 3):
        created = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": seconds}})
        assert created.status_code == 202, created.text
        run_id = created.json()["id"]
        api.get(f"/runs/{run_id}")  # a copy of the run, not final, in the cache
        response = api.get(f"/runs/{run_id}", params={"wait": 60}, timeout=90)
        answered = time.time()
        assert response.status_code == 200 and response.json()["state"]["type"] == "COMPLETED"
        ended = dt.datetime.fromisoformat(prefect.flow_run(run_id)["state"]["timestamp"])
        lags.append(answered - ended.timestamp())
    assert all(0 <= lag < 1 for lag in lags), f"answered {lags} s after the runs ended"
    print(f"wait: answered {', '.join(f'{lag:.3f}' for lag in lags)} s after the runs ended")
    # And a wait that ends at its deadline answers with the state then.
    created = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 30}})
    run_id = created.json()["id"]
    began = time.monotonic()
    response = api.get(f"/runs/{run_id}", params={"wait": 1.5})
    assert response.json()["state"]["type"] in {"SCHEDULED", "PENDING", "RUNNING"}
    assert time.monotonic() - began >= 1.5
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202


# -- streams ------------------------------------------------------------------------------


def said(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["event"], e["data"]["type"] if e["event"] == "state" else e["data"]["message"])
        for e in events
        if e["event"] in ("state", "log")
    ]


def prefect_connections(stack: LocalStack) -> int:
    """The API process's open TCP connections to the Prefect server."""
    api = psutil.Process(stack.processes["api"].pid)
    return sum(
        1
        for c in api.net_connections(kind="tcp")
        if c.raddr and c.raddr.port == stack.port and c.status == psutil.CONN_ESTABLISHED
    )


def test_200_streams_of_a_run_see_it_all_over_one_subscription_per_kind(
    stack: LocalStack, api: httpx.Client, prefect: PrefectApi
) -> None:
    """GET /runs/{id}/events: 200 clients at once (two keys, within their rate limits) each
    see every state and line, in order, and the end; the API holds no more connections to
    Prefect for them; a stream resumed from any event id gives exactly the rest."""
    log = stack.log_dir / "api.log"
    stack.wait_until(lambda: "following log lines" in log.read_text(), 60, "the log lines")
    keys = []
    for n in range(2):
        made = api.post(
            "/keys",
            json={"name": f"streams-{n}-{uuid.uuid4().hex[:6]}", "role": "viewer", "owner": "t"},
        )
        assert made.status_code == 201, made.text
        keys.append(made.json()["key"])
    before = prefect_connections(stack)
    body = {"flow": "probe", "parameters": {"seconds": 6, "lines": 12}}
    run_id = api.post("/runs", json=body).json()["id"]
    during: list[int] = []

    async def one(client: httpx.AsyncClient, key: str) -> str:
        headers = {"Authorization": f"Bearer {key}"}
        async with client.stream("GET", f"/runs/{run_id}/events", headers=headers) as response:
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            return (await response.aread()).decode()

    async def watch_connections() -> None:
        while True:
            await asyncio.sleep(1)
            during.append(await asyncio.to_thread(prefect_connections, stack))

    async def everyone() -> list[str]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(
            base_url=stack.service_url, timeout=90, limits=limits
        ) as client:
            counting = asyncio.create_task(watch_connections())
            try:
                return await asyncio.gather(*(one(client, keys[n % 2]) for n in range(200)))
            finally:
                counting.cancel()

    bodies = asyncio.run(everyone())
    states = prefect.states(run_id)  # as Prefect has them
    assert states[0] == "SCHEDULED" and states[-2:] == ["RUNNING", "COMPLETED"], states
    lines = [f"probe: line {n} of 12" for n in range(1, 13)]
    for text in bodies:
        events = sse.parse(text)
        assert events[-1]["event"] == "end", text[-500:]
        assert events[-1]["data"]["state"]["type"] == "COMPLETED"
        assert "notice" not in [e["event"] for e in events], text[:500]
        got = said(events)
        # Every state, in order, and every probe line, in order, after RUNNING (other
        # lines, the engine's and the worker's, among them). The engine's last batch of
        # lines may come after its final state (Prefect takes lines every 2 s), never
        # after the end.
        assert [m for kind, m in got if kind == "state"] == states, got
        probe = [(i, m) for i, (kind, m) in enumerate(got) if m.startswith("probe: line")]
        assert [m for _, m in probe] == lines, got
        assert probe[0][0] > got.index(("state", "RUNNING"))
        assert len(got) == len(set(e["id"] for e in events if e["event"] != "end"))
    # Two websockets (events, logs) and the REST pool's connections (the streams' first
    # reads of the log, each from its own position): not one per stream.
    print(f"streams: API-Prefect connections {before} before, {max(during)} at most during")
    assert max(during) <= before + 25, (before, during)

    whole = [e for e in sse.parse(bodies[0]) if e["event"] in ("state", "log")]
    for k in (0, 3, len(whole) // 2, len(whole) - 2):
        resumed = api.get(
            f"/runs/{run_id}/events", headers={"Last-Event-ID": whole[k]["id"]}, timeout=60
        )
        assert resumed.status_code == 200, resumed.text
        # What was not had yet, each once; in time order now that it is all read, where
        # the first stream gave lines as they arrived (a worker's line can reach Prefect
        # after a state that followed it).
        rest = said(sse.parse(resumed.text))
        assert sorted(rest) == sorted(said(whole[k + 1 :])), k
        assert [x for x in rest if x[0] == "state"] == [
            x for x in said(whole[k + 1 :]) if x[0] == "state"
        ]
