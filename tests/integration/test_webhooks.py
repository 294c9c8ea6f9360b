"""Webhooks against the real stack: a receiver on 127.0.0.1 (the stack's API allows private
targets, as the tests configure it) that refuses the first three attempts gets a run's end,
signed, with one webhook-id, although the API was stopped while the run ended; the outbox in
PostgreSQL shows every attempt."""

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from devstack.stack import LocalStack, wait_until
from testkit.prefect_api import PrefectApi
from testkit.receiver import Receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver(failures=3)
    yield server
    server.close()


def test_a_run_s_end_reaches_a_failing_receiver_across_an_api_restart(
    stack: LocalStack, api: httpx.Client, prefect: PrefectApi, receiver: Receiver
) -> None:
    made = api.post(
        "/webhooks",
        json={"url": receiver.url, "events": ["run.completed", "run.failed"], "flow": "probe"},
    )
    assert made.status_code == 201, made.text
    hook = made.json()
    other = api.post(
        "/webhooks",
        json={"url": receiver.url, "events": ["run.completed"], "flow": "load-data"},
    ).json()  # another flow's: it gets nothing of the probe
    listed = api.get("/webhooks", params={"limit": 100}).json()["webhooks"]
    assert {hook["id"], other["id"]} <= {h["id"] for h in listed}
    assert all("secret" not in h for h in listed)
    run_id = api.post("/runs", json={"flow": "probe", "parameters": {"seconds": 3}}).json()["id"]
    wait_until(lambda: prefect.flow_run(run_id)["state"]["type"] == "RUNNING", 60, "running")

    stack.stop_service("api")  # the run ends while no API follows the events
    final = prefect.wait(run_id, timeout=60)
    assert final["state"]["type"] == "COMPLETED"
    time.sleep(1)
    assert receiver.requests == []
    stack.start_service("api")
    stack.wait_until(
        lambda: httpx.get(f"{stack.service_url}/readyz", timeout=5).status_code == 200,
        60,
        "the API back",
    )

    # Read back from Prefect, then three refusals and retries (API_WEBHOOK_FIRST_RETRY_SECONDS
    # is 0.2 in the tests' stack), then delivered.
    wait_until(lambda: len(receiver.requests) >= 4, 60, "four attempts")
    time.sleep(1)  # nothing more comes once one was accepted
    assert len(receiver.requests) == 4
    ids = {headers["webhook-id"] for headers, _ in receiver.requests}
    assert len(ids) == 1, ids
    headers, body = receiver.requests[-1]
    message = Verifier(hook["secret"]).verify(body, headers)
    assert message["type"] == "run.completed"
    assert message["data"]["run_id"] == run_id and message["data"]["flow"] == "probe"
    assert message["data"]["state"]["type"] == "COMPLETED"
    assert json.loads(body) == message

    deliveries = api.get(f"/webhooks/{hook['id']}/deliveries").json()["deliveries"]
    [delivery] = [d for d in deliveries if d["run_id"] == run_id]
    assert delivery["state"] == "delivered" and delivery["message_id"] in ids
    assert [a["status"] for a in delivery["attempts"]] == [503, 503, 503, 204]
    assert api.get(f"/webhooks/{other['id']}/deliveries").json()["deliveries"] == []

    # Sent again on request: the same webhook-id.
    again = api.post(f"/webhooks/{hook['id']}/deliveries/{delivery['id']}/redeliver")
    assert again.status_code == 202, again.text
    wait_until(lambda: len(receiver.requests) == 5, 30, "the redelivery")
    assert receiver.requests[-1][0]["webhook-id"] in ids
    for made_id in (hook["id"], other["id"]):
        assert api.delete(f"/webhooks/{made_id}").status_code == 204
