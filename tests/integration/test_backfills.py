"""Backfills against the real stack: a year of train-model with `auto_load`, two runs at a
time, on yellow-taxi months no other test uses (so that its champion is this test's alone).
Prefect is read directly to check what the backfill says of itself."""

import datetime as dt
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from api.db import ApiDatabase
from common.web.db import prepare_database
from devstack.postgres import ensure_database
from devstack.stack import LocalStack
from testkit.prefect_api import PrefectApi

pytestmark = pytest.mark.integration

DATASET = "yellow"
MODEL = f"trip-duration-{DATASET}"
GOING = ["SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"]


def champion(stack: LocalStack) -> str | None:
    answer = httpx.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/registered-models/get", params={"name": MODEL}
    )
    answer.raise_for_status()
    aliases = answer.json()["registered_model"].get("aliases", [])
    return next((a["version"] for a in aliases if a["alias"] == "champion"), None)


def tagged_runs(prefect: PrefectApi, tag: str) -> list[dict[str, Any]]:
    response = prefect.http.post(
        "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}, "limit": 200}
    )
    response.raise_for_status()
    return response.json()


def loads_since(prefect: PrefectApi, since: dt.datetime) -> list[dict[str, Any]]:
    """Every load-data run started since `since`: the backfill's and any a train-model run
    made of its own (`auto_load`'s subflows); not the schedule's, which wait for later."""
    response = prefect.http.post(
        "/flow_runs/filter",
        json={
            "flows": {"name": {"any_": ["load-data"]}},
            "flow_runs": {"start_time": {"after_": since.isoformat()}},
            "limit": 200,
        },
    )
    response.raise_for_status()
    return response.json()


def test_a_year_of_training_two_at_a_time_loads_each_month_once_and_keeps_the_champion(
    stack: LocalStack, api: httpx.Client, prefect: PrefectApi
) -> None:
    parameters = {"auto_load": True, "source": "synthetic", "dataset": DATASET}
    # One month done before, by an ordinary run, which may promote: the first of the model.
    first = {"flow": "train-model", "parameters": parameters | {"date": "2014-05-01"}}
    before = api.post("/runs", json=first)
    assert before.status_code == 202, before.text
    assert prefect.wait(before.json()["id"], timeout=180)["state"]["type"] == "COMPLETED"
    kept = champion(stack)
    assert kept is not None

    began = dt.datetime.now(dt.UTC)
    body = {"flow": "train-model", "start": "2014-03", "end": "2015-02", "max_active": 2,
            "parameters": parameters}  # fmt: skip
    made = api.post("/backfills", json=body)
    assert made.status_code == 202, made.text
    backfill = made.json()
    by_date = {d["date"]: d for d in backfill["dates"]}
    assert len(by_date) == 12 and by_date["2014-05-01"]["status"] == "skipped"
    assert by_date["2014-05-01"]["reason"].startswith(f"done: run {before.json()['id']}")
    months = [m["month"] for m in backfill["loads"]]
    assert months == [f"2014-{m:02d}" for m in range(1, 13)] + ["2015-01"]
    again = api.post("/backfills", json=body)
    assert again.status_code == 200 and again.json()["id"] == backfill["id"]

    most = 0
    deadline = time.monotonic() + 600
    while True:
        runs = tagged_runs(prefect, f"backfill:{backfill['id']}")
        most = max(most, sum(r["state"]["type"] in GOING for r in runs))
        shown = api.get(f"/backfills/{backfill['id']}").json()
        if shown["status"] != "running":
            break
        assert time.monotonic() < deadline, shown["progress"]
        time.sleep(0.5)

    assert shown["status"] == "completed", shown
    assert shown["progress"] == {"total": 12, "pending": 0, "skipped": 1, "running": 0,
                                 "completed": 11, "failed": 0, "cancelled": 0}  # fmt: skip
    assert 1 <= most <= 2
    assert len(runs) == 11 + 13  # the dates' runs and the loads', each once
    assert all(r["state"]["type"] == "COMPLETED" for r in runs)
    # (The schedule's runs name no month: they load the last one, not these.)
    loaded = Counter(r["parameters"].get("month") for r in loads_since(prefect, began))
    loaded.pop(None, None)
    assert loaded == Counter(months), loaded  # each month once, by the backfill alone

    assert champion(stack) == kept  # registered as challengers: champion did not move
    for date in shown["dates"]:
        if date["status"] == "completed":
            run = api.get(f"/runs/{date['run']}").json()
            assert run["parameters"]["promote"] is False
            assert run["registry"]["alias"] == "challenger", run["registry"]
            assert "promote=false" in run["registry"]["decision"]
            assert f"champion stays version {kept}" in run["registry"]["decision"]

    # Done now, by the runs and the registry alike: a second backfill has nothing to do.
    redo = api.post("/backfills", json=body | {"max_active": 1}).json()
    assert {d["status"] for d in redo["dates"]} == {"skipped"} and redo["loads"] == []


def test_a_cancelled_backfill_stops_its_runs(api: httpx.Client, prefect: PrefectApi) -> None:
    body = {"flow": "load-data", "start": "2013-01", "end": "2013-06", "max_active": 2,
            "parameters": {"source": "synthetic", "dataset": DATASET}}  # fmt: skip
    backfill = api.post("/backfills", json=body).json()
    deadline = time.monotonic() + 60
    while not tagged_runs(prefect, f"backfill:{backfill['id']}"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    cancelling = api.post(f"/backfills/{backfill['id']}/cancel")
    assert cancelling.status_code == 202 and cancelling.json()["status"] in (
        "cancelling", "cancelled", "completed"
    )  # fmt: skip
    while (shown := api.get(f"/backfills/{backfill['id']}").json())["status"] == "cancelling":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    runs = tagged_runs(prefect, f"backfill:{backfill['id']}")
    assert all(r["state"]["type"] in ("COMPLETED", "CANCELLED") for r in runs)
    assert len(runs) < 6 and shown["status"] == "cancelled"
    assert shown["progress"]["cancelled"] >= 6 - len(runs)


def test_leases_hand_a_backfill_to_one_process_at_a_time(stack: LocalStack) -> None:
    """api.db's lease statements on PostgreSQL, in a database of their own (the stack's API
    would carry these backfills out otherwise): a process that lost its lease can neither
    renew it nor save; a release hands it over at once; past the batch, the backfill waited
    longest comes first."""
    url = ensure_database(stack.admin_url, f"leases_{uuid.uuid4().hex[:8]}")
    database = ApiDatabase(url, max_connections=2)
    prepare_database(database, None)
    first, second = uuid.uuid4(), uuid.uuid4()
    plan = {"dates": [], "loads": []}
    made = [
        database.create_backfill(f"h{n}", "ci", "r", "probe", {"max_active": 1}, plan)[0]
        for n in range(3)
    ]
    try:
        assert [b.id for b in database.claim_backfills(first, 30, 10)] == [b.id for b in made]
        assert database.claim_backfills(second, 30, 10) == []
        assert database.renew_backfill(made[0].id, second, 30) is None
        assert database.renew_backfill(made[0].id, first, 30) is not None
        assert not database.save_backfill(made[0].id, second, plan, "completed")
        database.cancel_backfill(made[1].id)  # seen by the holder's next renewal
        renewed = database.renew_backfill(made[1].id, first, 30)
        assert renewed is not None and renewed.cancel_requested
        assert database.save_backfill(made[1].id, first, plan, "running")
        assert database.read_backfill(made[1].id).status == "cancelling"  # type: ignore[union-attr]
        database.release_backfills(first)
        assert {b.id for b in database.claim_backfills(second, 30, 10)} == {b.id for b in made}
        assert database.renew_backfill(made[0].id, first, 30) is None
        assert not database.save_backfill(made[0].id, first, plan, "completed")
        # Past the batch: each claim takes those whose lease ends first.
        assert [b.id for b in database.claim_backfills(second, 30, 1)] == [made[0].id]
        assert [b.id for b in database.claim_backfills(second, 30, 1)] == [made[1].id]
    finally:
        database.close()
