"""Backfills in-process (api.backfills, /backfills) over a fake Prefect and database, with the
flows' real parameter schemas: the dates planned, what `reprocess` skips, each month loaded
once, `max_active` held, cancelling, and the route's refusals."""

import asyncio
import datetime as dt
import json
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prefect.client.schemas.objects import StateType
from prefect.utilities.callables import parameter_schema

from api.backfills import (
    BACKFILL_TAG,
    MAX_DATES,
    Backfiller,
    BackfillRefused,
    History,
    Plan,
    dates,
    parse_day,
    skip_reason,
)
from api.registry import trained_months
from api.routers import backfills as backfills_router
from api.schemas import MONTH_OR_DAY
from common.contract import LOAD_DATA, PROBE, TRAIN_MODEL
from common.months import training_months
from common.web.db import blocking
from common.web.problems import unavailable as unavailable_problem
from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app
from trainer.flows import load_data, probe, train_model

SCHEMAS = {
    TRAIN_MODEL: parameter_schema(train_model).model_dump(),
    LOAD_DATA: parameter_schema(load_data).model_dump(),
    PROBE: parameter_schema(probe).model_dump(),
}


@pytest.fixture
def prefect() -> FakePrefect:
    prefect = FakePrefect()
    for flow, schema in SCHEMAS.items():
        prefect.add_flow(flow).parameter_openapi_schema = schema
    return prefect


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def app(prefect: FakePrefect, database: FakeDatabase) -> FastAPI:
    return api_app(prefect, database, mlflow_tracking_uri=None)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def create(client: TestClient, **body: Any) -> httpx.Response:
    body = {"flow": TRAIN_MODEL, "start": "2024-03", "end": "2025-02"} | body
    return client.post("/backfills", json=body, headers=AUTH)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return response.json()


# -- the dates -----------------------------------------------------------------------------


days = st.dates()  # year 1 to 9999: dates past 9999 end the range, not the API


@given(days, st.integers(min_value=0, max_value=MAX_DATES + 5), st.integers(0, 40))
def test_dates_step_a_month_from_start_and_stop_at_end(
    start: dt.date, months: int, extra_days: int
) -> None:
    end = (
        min(start + dt.timedelta(days=months * 31 + extra_days), dt.date.max)
        if (dt.date.max - start).days > months * 31 + extra_days
        else dt.date.max
    )
    try:
        found = dates(start, end)
    except BackfillRefused as refused:
        assert refused.field == "body.end" and "split it" in str(refused)
        assert (end.year - start.year) * 12 + end.month - start.month >= MAX_DATES
        return
    assert found[0] == start and found[-1] <= end
    for index, day in enumerate(found):
        month = start.year * 12 + start.month - 1 + index
        assert (day.year, day.month) == (month // 12, month % 12 + 1)
        assert day.day == start.day or day.day < start.day  # a short month clamps the day
    following = found[-1].year * 12 + found[-1].month  # the month after the last, 0-based
    if following // 12 > 9999:
        return  # there is none
    assert (following // 12, following % 12 + 1) > (end.year, end.month) or (
        dt.date(following // 12, following % 12 + 1, 1) + dt.timedelta(days=start.day - 1) > end
    )


def test_a_month_end_start_keeps_to_month_ends() -> None:
    found = dates(dt.date(2024, 1, 31), dt.date(2024, 4, 30))
    assert found == [dt.date(2024, 1, 31), dt.date(2024, 2, 29), dt.date(2024, 3, 31),
                     dt.date(2024, 4, 30)]  # fmt: skip


def test_an_end_before_the_start_is_refused() -> None:
    with pytest.raises(BackfillRefused, match="before start"):
        dates(dt.date(2024, 3, 1), dt.date(2024, 2, 1))


@given(st.from_regex(MONTH_OR_DAY, fullmatch=True))
def test_every_start_the_schema_lets_through_is_a_date_or_a_clear_refusal(text: str) -> None:
    """The request's pattern and the parser agree: text the schema takes is a date, or a
    refusal that names the field (a 422), never an error of ours."""
    try:
        day = parse_day(text, "body.start")
    except BackfillRefused as refused:
        assert refused.field == "body.start" and text in str(refused)
        return
    assert day.isoformat().startswith(text[:7])


# -- what reprocess skips ------------------------------------------------------------------


def test_reprocess_decides_from_the_runs_and_the_registry(prefect: FakePrefect) -> None:
    done = prefect.add_run(TRAIN_MODEL, StateType.COMPLETED)
    failed = prefect.add_run(TRAIN_MODEL, StateType.FAILED)
    going = prefect.add_run(TRAIN_MODEL, StateType.RUNNING)
    never = History()
    cases = {
        "missing": [
            (History(done, done), "done: run"),
            (History(failed), None),
            (History(going), "in progress"),
            (never, None),
        ],
        "failed": [
            (History(done, done), "done: run"),
            (History(failed), None),
            (History(going), "in progress"),
            (never, "not failed: it never ran"),
        ],
        "all": [(History(done, done), None), (never, None)],
    }
    for reprocess, expected in cases.items():
        for history, reason in expected:
            said = skip_reason(reprocess, history, None)  # type: ignore[arg-type]
            assert (said is None) == (reason is None), (reprocess, history, said)
            assert reason is None or (said is not None and said.startswith(reason))
    assert skip_reason("missing", never, "the registry has it") == "done: the registry has it"
    assert skip_reason("all", never, "the registry has it") is None


# -- POST /backfills -----------------------------------------------------------------------


def test_a_backfill_is_planned_and_the_same_request_answers_it(client: TestClient) -> None:
    response = create(client, max_active=2, parameters={"source": "synthetic"})
    assert response.status_code == 202, response.text
    made = response.json()
    assert response.headers["idempotency-replayed"] == "false"
    assert response.headers["location"] == made["links"]["self"]
    assert made["status"] == "running" and made["created_by"] == "ci"
    assert [d["date"] for d in made["dates"]] == [
        f"{year}-{month:02d}-01"
        for year, month in [(2024, m) for m in range(3, 13)] + [(2025, 1), (2025, 2)]
    ]
    assert made["progress"] == {"total": 12, "pending": 12, "skipped": 0, "running": 0,
                                "completed": 0, "failed": 0, "cancelled": 0}  # fmt: skip
    assert made["loads"] == [] and made["request"]["promote"] is False
    again = create(client, max_active=2, parameters={"source": "synthetic"})
    assert again.status_code == 200 and again.headers["idempotency-replayed"] == "true"
    assert again.json()["id"] == made["id"]
    forced = client.post(
        "/backfills?force=true",
        json={
            "flow": TRAIN_MODEL,
            "start": "2024-03",
            "end": "2025-02",
            "max_active": 2,
            "parameters": {"source": "synthetic"},
        },
        headers=AUTH,
    )
    assert forced.status_code == 202 and forced.json()["id"] != made["id"]
    read = client.get(made["links"]["self"], headers=AUTH).json()
    assert read["id"] == made["id"] and read["dates"] == made["dates"]
    listed = client.get("/backfills", headers=AUTH).json()["backfills"]
    assert [b["id"] for b in listed] == [made["id"], forced.json()["id"]]


def test_months_done_are_skipped_and_say_why(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    done = prefect.add_run(TRAIN_MODEL, StateType.COMPLETED, parameters={"date": "2024-04-15"})
    other = {"date": "2024-05-01", "dataset": "green"}  # other data: not the same work
    prefect.add_run(TRAIN_MODEL, StateType.COMPLETED, parameters=other)
    prefect.add_run(TRAIN_MODEL, StateType.FAILED, parameters={"date": "2024-06-01"})
    made = create(client, end="2024-06").json()
    by_date = {d["date"]: d for d in made["dates"]}
    assert by_date["2024-04-01"]["status"] == "skipped"
    assert by_date["2024-04-01"]["reason"] == f"done: run {done.id} completed"
    assert [by_date[d]["status"] for d in ("2024-03-01", "2024-05-01", "2024-06-01")] == [
        "pending"
    ] * 3
    # (That backfill, still running, has its months to run: another would skip them.)
    database.backfills[uuid.UUID(made["id"])].status = "completed"
    failed_only = create(client, end="2024-06", reprocess="failed").json()
    statuses = {d["date"]: d["status"] for d in failed_only["dates"]}
    assert statuses == {"2024-03-01": "skipped", "2024-04-01": "skipped",
                        "2024-05-01": "skipped", "2024-06-01": "pending"}  # fmt: skip


def test_auto_load_plans_each_month_once(client: TestClient) -> None:
    made = create(client, end="2024-06", parameters={"auto_load": True, "dataset": "fhv"}).json()
    needed = sorted({m for d in ("2024-03-01", "2024-04-01", "2024-05-01", "2024-06-01")
                     for m in training_months(dt.date.fromisoformat(d))})  # fmt: skip
    assert [m["month"] for m in made["loads"]] == needed == [
        "2024-01", "2024-02", "2024-03", "2024-04", "2024-05"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"flow": PROBE}, "body.flow", "no `date` or `month` parameter"),
        ({"parameters": {"date": "2024-01-01"}}, "body.parameters.date", "the backfill's"),
        ({"parameters": {"promote": True}}, "body.parameters.promote", "beside"),
        ({"flow": LOAD_DATA, "promote": True}, "body.promote", "registers no models"),
        ({"end": "2024-02"}, "body.end", "before start"),
        ({"start": "2024-02-30"}, "body.start", "is not a date"),
        ({"end": "2040-01"}, "body.end", "split it"),
        ({"parameters": {"dataset": "nope"}}, "parameters.dataset", ""),
        ({"parameters": {"surprise": 1}}, "parameters", ""),
        ({"max_active": 0}, "body.max_active", ""),
        ({"reprocess": "some"}, "body.reprocess", ""),
        ({"step": "week"}, "body.step", ""),
    ],
)
def test_bad_backfills_are_refused_with_the_field(
    client: TestClient, database: FakeDatabase, body: dict[str, Any], field: str, words: str
) -> None:
    refused = problem(create(client, **body), 422)
    assert any(e["field"].startswith(field) for e in refused["errors"]), refused
    assert words in refused["detail"]
    assert database.backfills == {}


def test_an_unknown_flow_is_a_404_and_a_viewer_may_only_read(
    client: TestClient, database: FakeDatabase
) -> None:
    viewer = {"Authorization": f"Bearer {database.add_key('looker', 'viewer')}"}
    assert "probe" in problem(create(client, flow="nope"), 404)["detail"]
    body = {"flow": TRAIN_MODEL, "start": "2024-03", "end": "2024-04"}
    assert client.post("/backfills", json=body, headers=viewer).status_code == 403
    assert client.get("/backfills", headers=viewer).status_code == 200
    assert problem(client.get(f"/backfills/{uuid.uuid4()}", headers=viewer), 404)


# -- carrying it out -----------------------------------------------------------------------


def turn(backfiller: Backfiller) -> None:
    asyncio.run(backfiller.turn())


def finish_going(prefect: FakePrefect, state: StateType = StateType.COMPLETED) -> list[str]:
    """End every run that has not ended; what each ran (its date or month)."""
    ended = []
    for run in list(prefect.flow_runs.values()):
        if run.state is not None and run.state.type in (StateType.SCHEDULED, StateType.RUNNING):
            prefect.move(run.id, state)
            ended.append(run.parameters.get("date") or run.parameters["month"])
    return ended


def test_a_year_runs_two_at_a_time_loads_each_month_once_and_completes(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    prefect.add_run(TRAIN_MODEL, StateType.COMPLETED, parameters={"date": "2024-05-01"})
    made = create(client, max_active=2, parameters={"auto_load": True}).json()
    backfiller = Backfiller(database, prefect, blocking)
    started: list[str] = []
    for _ in range(40):
        turn(backfiller)
        going = [
            r for r in prefect.flow_runs.values() if r.state and r.state.type == StateType.SCHEDULED
        ]
        assert len(going) <= 2
        if not going:
            break
        started += finish_going(prefect)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert shown["status"] == "completed" and shown["ended"] is not None
    loads = [m for m in started if len(m) == 7]
    assert sorted(loads) == sorted(set(loads)) == [m["month"] for m in shown["loads"]]
    assert "2024-05-01" not in started  # done before
    assert shown["progress"] | {"total": 0} == {"total": 0, "pending": 0, "skipped": 1,
        "running": 0, "completed": 11, "failed": 0, "cancelled": 0}  # fmt: skip
    for date in shown["dates"]:
        if date["status"] == "completed":
            run = prefect.flow_runs[uuid.UUID(date["run"])]
            assert run.parameters == {"date": date["date"], "auto_load": True, "promote": False}
            assert f"{BACKFILL_TAG}{made['id']}" in run.tags and "caller:ci" in run.tags
            # a date starts only once both its months are loaded
            months = training_months(dt.date.fromisoformat(date["date"]))
            assert all(loads.index(m) < started.index(date["date"]) for m in months)


def test_a_run_that_fails_fails_the_backfill_but_not_the_other_dates(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-03").json()
    backfiller = Backfiller(database, prefect, blocking)
    turn(backfiller)
    finish_going(prefect, StateType.FAILED)
    for _ in range(5):
        turn(backfiller)
        finish_going(prefect)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert [d["status"] for d in shown["dates"]] == ["failed", "completed", "completed"]
    assert shown["status"] == "failed"


def test_a_cancelled_backfill_cancels_its_runs_and_starts_no_more(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-06", max_active=2).json()
    backfiller = Backfiller(database, prefect, blocking)
    turn(backfiller)
    cancelling = client.post(made["links"]["cancel"], headers=AUTH)
    assert cancelling.status_code == 202 and cancelling.json()["status"] == "cancelling"
    turn(backfiller)
    going = [r for r in prefect.flow_runs.values() if r.state.type == StateType.CANCELLING]
    assert len(going) == 2 and len(prefect.flow_runs) == 2
    assert client.get(made["links"]["self"], headers=AUTH).json()["status"] == "cancelling"
    for run in going:
        prefect.move(run.id, StateType.CANCELLED)
    turn(backfiller)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert shown["status"] == "cancelled" and len(prefect.flow_runs) == 2
    assert [d["status"] for d in shown["dates"]] == ["cancelled"] * 6
    assert client.post(made["links"]["cancel"], headers=AUTH).json()["status"] == "cancelled"


def test_a_second_process_leaves_a_held_backfill_alone(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    create(client, flow=LOAD_DATA, start="2024-01", end="2024-06", max_active=6)
    first, second = (Backfiller(database, prefect, blocking) for _ in range(2))
    turn(first)
    turn(second)
    assert len(prefect.flow_runs) == 6  # started once, by the first
    assert asyncio.run(second.turn()) == 0
    asyncio.run(first.release())  # the first stops: the second takes over at once
    assert asyncio.run(second.turn()) == 1


def test_prefect_away_costs_a_turn_and_nothing_else(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-02", max_active=2).json()
    backfiller = Backfiller(database, prefect, blocking)
    prefect.down = True
    turn(backfiller)
    prefect.down = False
    turn(backfiller)
    plan = Plan.of(database.backfills[uuid.UUID(made["id"])].plan)
    assert [d.status for d in plan.dates] == ["running", "running"]
    assert len(prefect.flow_runs) == 2


def test_a_run_started_but_not_recorded_is_not_started_twice(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    """A process that dies between starting a run and recording it: the next turn starts
    it with the same Prefect idempotency key, and gets back the run it made."""
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-02", max_active=2).json()
    backfill_id = uuid.UUID(made["id"])
    unrecorded = database.backfills[backfill_id].plan
    turn(Backfiller(database, prefect, blocking))
    first = {d.run for d in Plan.of(database.backfills[backfill_id].plan).dates}
    database.backfills[backfill_id].plan = unrecorded  # the save never happened
    database.backfill_leases.clear()  # and the lease ran out
    turn(Backfiller(database, prefect, blocking))
    assert {d.run for d in Plan.of(database.backfills[backfill_id].plan).dates} == first
    assert len(prefect.flow_runs) == 2
    assert all(re.fullmatch(rf"backfill:{backfill_id}:date:2024-0[12]", k) for k in prefect.by_key)


# -- the registry (api.registry) -------------------------------------------------------------


def mlflow(runs: list[dict[str, Any]], *, experiment: bool = True) -> httpx.MockTransport:
    """MLflow's REST API over `runs` of one experiment, in pages of one run."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/experiments/get-by-name"):
            if not experiment:
                return httpx.Response(404, json={"error_code": "RESOURCE_DOES_NOT_EXIST"})
            assert request.url.params["experiment_name"] == "trip-duration-fhv"
            return httpx.Response(200, json={"experiment": {"experiment_id": "7"}})
        body = json.loads(request.content)
        assert body["experiment_ids"] == ["7"] and body["filter"] == "tags.promotion LIKE '%'"
        at = int(body.get("page_token", "0"))
        page: dict[str, Any] = {"runs": runs[at : at + 1]}
        if at + 1 < len(runs):
            page["next_page_token"] = str(at + 1)
        return httpx.Response(200, json=page)

    return httpx.MockTransport(answer)


def mlflow_run(run_id: str, train: str, val: str) -> dict[str, Any]:
    params = [{"key": "train_month", "value": train}, {"key": "val_month", "value": val}]
    return {"info": {"run_id": run_id}, "data": {"params": params}}


def test_the_registry_says_which_months_have_a_model() -> None:
    runs = [mlflow_run("a", "2024-01", "2024-02"), mlflow_run("b", "2024-03", "2024-04"),
            {"info": {"run_id": "c"}, "data": {}}]  # fmt: skip
    found = asyncio.run(trained_months("http://mlflow", "trip-duration-fhv", mlflow(runs)))
    assert set(found) == {("2024-01", "2024-02"), ("2024-03", "2024-04")}
    assert found[("2024-01", "2024-02")] == (
        "trip-duration-fhv has a version trained on 2024-01, validated on 2024-02 (MLflow run a)"
    )
    none = mlflow(runs, experiment=False)
    assert asyncio.run(trained_months("http://mlflow", "trip-duration-fhv", none)) == {}


def test_a_month_in_the_registry_is_skipped(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, app: FastAPI
) -> None:
    app.state.settings.mlflow_tracking_uri = "http://mlflow"
    registry = mlflow([mlflow_run("a", "2024-02", "2024-03")])

    async def trained(uri: str, model: str) -> dict[tuple[str, str], str]:
        return await trained_months(uri, model, registry)

    monkeypatch.setattr(backfills_router, "trained_months", trained)
    dates_ = create(client, end="2024-05").json()["dates"]
    assert [d["status"] for d in dates_] == ["pending", "skipped", "pending"]
    assert dates_[1]["reason"] == (
        "done: trip-duration-fhv has a version trained on 2024-02, validated on 2024-03 "
        "(MLflow run a)"
    )


def test_the_registry_away_is_a_503_and_makes_nothing(
    client: TestClient, app: FastAPI, database: FakeDatabase
) -> None:
    app.state.settings.mlflow_tracking_uri = "http://127.0.0.1:1"
    refused = problem(create(client), 503)
    assert "the model registry (MLflow at http://127.0.0.1:1) is unavailable" in refused["detail"]
    assert database.backfills == {}
    assert create(client, reprocess="all").status_code == 202  # which asks no registry


TEXTS = st.one_of(st.text(max_size=12), st.from_regex(MONTH_OR_DAY, fullmatch=True))
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 200), st.floats(), TEXTS)


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "flow": st.sampled_from([TRAIN_MODEL, LOAD_DATA, PROBE, "nope", ""]),
            "start": TEXTS,
            "end": TEXTS,
            "step": st.sampled_from(["month", "week"]),
            "max_active": VALUES,
            "reprocess": st.sampled_from(["missing", "failed", "all", "x"]),
            "promote": VALUES,
            "parameters": st.dictionaries(
                st.sampled_from(["date", "month", "dataset", "auto_load", "source", "x"]), VALUES
            ),
        },
    )
)
def test_any_backfill_body_is_made_or_refused_never_a_5xx(body: dict[str, Any]) -> None:
    """The API fuzz leaves POST /backfills out (a fuzzed backfill would start real runs on
    the shared stack): its bodies are fuzzed here."""
    prefect, database = FakePrefect(), FakeDatabase()
    for flow, schema in SCHEMAS.items():
        prefect.add_flow(flow).parameter_openapi_schema = schema
    client = TestClient(api_app(prefect, database, mlflow_tracking_uri=None))
    # json.dumps writes NaN and Infinity as JavaScript does, which JSON has not: a 422.
    raw = json.dumps(body)
    headers = AUTH | {"Content-Type": "application/json"}
    response = client.post("/backfills", content=raw, headers=headers)
    assert response.status_code in (202, 404, 422), response.text
    if not _strict_json(raw):
        assert response.status_code == 422 and "not valid JSON" in response.text
    if response.status_code == 202:
        made = response.json()
        assert 1 <= made["progress"]["total"] <= MAX_DATES
        assert len(database.backfills) == 1
    else:
        assert database.backfills == {}
        assert response.headers["content-type"] == "application/problem+json"


def _strict_json(text: str) -> bool:
    def refuse(constant: str) -> None:
        raise ValueError(constant)

    try:
        json.loads(text, parse_constant=refuse)
    except ValueError:
        return False
    return True


def test_a_run_deleted_from_prefect_counts_as_cancelled(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-02", max_active=2).json()
    backfiller = Backfiller(database, prefect, blocking)
    turn(backfiller)
    prefect.flow_runs.clear()
    turn(backfiller)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert [d["state"] for d in shown["dates"]] == ["CANCELLED", "CANCELLED"]
    assert shown["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "dates_"),
    [
        ({"flow": LOAD_DATA, "start": "9999-11", "end": "9999-12-31"}, ["9999-11", "9999-12"]),
        ({"flow": LOAD_DATA, "start": "0001-01", "end": "0001-01"}, ["0001-01"]),
    ],
)
def test_the_first_and_last_months_there_are(
    client: TestClient, body: dict[str, Any], dates_: list[str]
) -> None:
    made = create(client, **body)
    assert made.status_code == 202, made.text
    assert [d["date"] for d in made.json()["dates"]] == dates_


def test_training_on_months_before_year_one_is_refused(client: TestClient) -> None:
    refused = problem(create(client, start="0001-02", end="0001-03"), 422)
    assert refused["errors"][0]["field"] == "body.start"
    assert "has no months before it" in refused["detail"]


def test_the_same_backfill_written_another_way_is_the_same(client: TestClient) -> None:
    made = create(client, start="2024-03", end="2025-02").json()
    again = create(client, start="2024-03-01", end="2025-02-28")
    assert again.status_code == 200 and again.json()["id"] == made["id"]
    assert create(client, start="2024-03-01", end="2025-02-01").json()["id"] == made["id"]
    other = create(client, start="2024-03-02", end="2025-02-28").json()  # other days
    assert other["id"] != made["id"]


def test_months_an_open_backfill_has_are_not_run_twice(client: TestClient) -> None:
    first = create(client, start="2024-03", end="2024-06").json()
    second = create(client, start="2024-05", end="2024-08").json()
    by_date = {d["date"]: d for d in second["dates"]}
    for date in ("2024-05-01", "2024-06-01"):
        assert by_date[date]["status"] == "skipped"
        assert by_date[date]["reason"] == f"in progress: backfill {first['id']}"
    assert [by_date[d]["status"] for d in ("2024-07-01", "2024-08-01")] == ["pending"] * 2
    other_data = create(client, start="2024-05", end="2024-06", parameters={"dataset": "green"})
    assert {d["status"] for d in other_data.json()["dates"]} == {"pending"}


def test_an_outdated_train_model_deployment_is_refused_not_promoting(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    old = {k: v for k, v in SCHEMAS[TRAIN_MODEL]["properties"].items() if k != "promote"}
    prefect.deployments[TRAIN_MODEL].parameter_openapi_schema = SCHEMAS[TRAIN_MODEL] | {
        "properties": old
    }
    refused = problem(create(client), 409)
    assert "register the deployments again" in refused["detail"]
    assert database.backfills == {}


def test_a_refusal_that_will_not_pass_fails_the_backfill_prefect_away_does_not(
    client: TestClient, prefect: FakePrefect, database: FakeDatabase
) -> None:
    made = create(client, flow=LOAD_DATA, start="2024-01", end="2024-03").json()
    backfiller = Backfiller(database, prefect, blocking)
    real_create = prefect.create_run

    async def unavailable(*args: Any) -> Any:
        raise unavailable_problem("the Prefect API", ConnectionError("refused"))

    prefect.create_run = unavailable  # type: ignore[method-assign]
    turn(backfiller)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert shown["status"] == "running" and "unavailable" in shown["error"]
    prefect.create_run = real_create  # type: ignore[method-assign]
    turn(backfiller)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert shown["error"] is None and shown["progress"]["running"] == 1
    del prefect.deployments[LOAD_DATA]
    prefect._catalogue.forget("flows")  # seen at once, not within FLOWS_CACHE_SECONDS
    finish_going(prefect)
    for _ in range(3):
        turn(backfiller)
    shown = client.get(made["links"]["self"], headers=AUTH).json()
    assert shown["status"] == "failed", shown
    assert shown["error"].startswith("unknown flow 'load-data'; the flows are: ")
    assert [d["status"] for d in shown["dates"]] == ["completed", "pending", "pending"]
