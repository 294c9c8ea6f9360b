"""api.webhooks and /webhooks in-process: signatures as Standard Webhooks defines them, the
retry schedule, which targets are refused, the message a run's end makes, the deliverer over
an in-memory outbox (testkit.apps.FakeDatabase, api.db's rules) and a receiver that fails
(retries, one webhook-id, order per run, given up), and the routes. Against PostgreSQL and a
real stack: tests/integration/test_webhooks.py."""

import asyncio
import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from prefect.events.schemas.events import Event
from standardwebhooks.webhooks import Webhook as Verifier

from api import webhooks
from api.webhooks import (
    RETRY_AFTER,
    Deliverer,
    TargetRefused,
    check_target,
    message_of,
    new_secret,
    private,
    retry_delay,
    sign,
)
from common.contract import DRIFT_DETECTED, MODEL_PROMOTED
from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app

T0 = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC)


def run_end(
    run_id: uuid.UUID, state: str = "COMPLETED", flow: str = "train-model", at: dt.datetime = T0
) -> Event:
    """A flow-run event as Prefect emits it when a run reaches `state`."""
    return Event(
        event=f"prefect.flow-run.{state.title()}",
        resource={
            "prefect.resource.id": f"prefect.flow-run.{run_id}",
            "prefect.resource.name": "tidy-orca",
            "prefect.state-type": state,
            "prefect.state-name": state.title(),
            "prefect.state-message": "" if state == "COMPLETED" else "it broke",
        },
        related=[
            {
                "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            }
        ],
        occurred=at,
        id=uuid.uuid4(),
    )


# -- signatures, schedule, targets ----------------------------------------------------------


def test_a_signature_is_the_standard_webhooks_hmac() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    at = dt.datetime(2026, 11, 30, 12, 0, 5, tzinfo=dt.UTC)
    body = '{"type":"run.completed"}'
    signed = f"msg_1.{int(at.timestamp())}.{body}".encode()
    digest = hmac.new(base64.b64decode(secret[6:]), signed, hashlib.sha256).digest()
    assert sign(secret, "msg_1", at, body) == "v1," + base64.b64encode(digest).decode()


def test_the_schedule_spans_about_a_day_then_gives_up() -> None:
    delays = [retry_delay(n, 5.0) for n in range(1, len(RETRY_AFTER) + 2)]
    assert delays[:3] == [5.0, 30.0, 120.0] and delays[-1] is None
    total = sum(d for d in delays if d is not None)
    assert 20 * 3600 < total < 28 * 3600
    assert retry_delay(1, 0.01) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "address",
    ["127.0.0.1", "10.1.2.3", "172.16.0.9", "192.168.1.1", "169.254.169.254", "0.0.0.0",
     "100.64.0.1", "::1", "fc00::1", "fe80::1%eth0", "::ffff:127.0.0.1", "224.0.0.1"],
)  # fmt: skip
def test_addresses_inside_are_private(address: str) -> None:
    assert private(address)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_not(address: str) -> None:
    assert not private(address)


@given(st.ip_addresses())
def test_private_is_the_opposite_of_globally_routable(address: ipaddress._BaseAddress) -> None:
    mapped = getattr(address, "ipv4_mapped", None)
    routable = (mapped or address).is_global and not (mapped or address).is_multicast
    assert private(str(address)) is not routable


def resolver(table: dict[str, list[str]]) -> webhooks.Resolve:
    async def resolve(host: str, port: int) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]  # a literal, as getaddrinfo gives it
        except ValueError:
            pass
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example/x", "only http and https"),
        ("https:///x", "no host"),
        ("https://user:pw@hooks.example/x", "credentials"),
        ("https://hooks.example/a b", "spaces or control"),
        ("https://hooks.example:99999/x", "port"),
        ("https://inside.example/x", "10.0.0.5"),
        ("https://mixed.example/x", "127.0.0.1"),
        ("https://nowhere.example/x", "does not resolve"),
    ],
)
async def test_targets_that_are_refused_say_why(url: str, why: str) -> None:
    table = {
        "hooks.example": ["93.184.215.14"],
        "inside.example": ["10.0.0.5"],
        "mixed.example": ["93.184.215.14", "127.0.0.1"],
    }
    with pytest.raises(TargetRefused, match=why):
        await check_target(url, False, resolver(table))


@pytest.mark.anyio
async def test_a_public_target_passes_and_the_setting_lets_private_ones_through() -> None:
    table = {"hooks.example": ["93.184.215.14"], "inside.example": ["10.0.0.5"]}
    await check_target("https://hooks.example/x", False, resolver(table))
    await check_target("http://inside.example:8080/x", True, resolver(table))
    with pytest.raises(TargetRefused):
        await check_target("ftp://inside.example/x", True, resolver(table))


# -- messages ---------------------------------------------------------------------------------


def test_a_run_s_end_is_a_message_and_other_events_are_not() -> None:
    run = uuid.uuid4()
    event = run_end(run, "FAILED", flow="load-data")
    message = message_of(event)
    assert message is not None
    assert (message.type, message.flow, message.run_id) == ("run.failed", "load-data", run)
    assert message.id == f"msg_{event.id}"
    assert message.body() == {
        "type": "run.failed",
        "timestamp": T0.isoformat(),
        "data": {
            "run_id": str(run),
            "flow": "load-data",
            "state": {"type": "FAILED", "name": "Failed", "message": "it broke"},
        },
    }
    running = run_end(run, "RUNNING")
    assert message_of(running) is None
    for state, kind in [("COMPLETED", "run.completed"), ("CRASHED", "run.crashed"),
                        ("CANCELLED", "run.cancelled")]:  # fmt: skip
        assert message_of(run_end(run, state)).type == kind  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("name", "kind", "flow", "payload"),
    [
        (MODEL_PROMOTED, "model.promoted", "train-model",
         {"model": "trip-duration-fhv", "version": "3", "previous": "2", "decision": "beats"}),
        (DRIFT_DETECTED, "drift.detected", "send-requests",
         {"model": "trip-duration-fhv", "version": "3", "month": "2021-09", "retrain": "r"}),
    ],
)  # fmt: skip
def test_the_flows_events_are_messages_about_their_run(
    name: str, kind: str, flow: str, payload: dict
) -> None:
    run = uuid.uuid4()
    event = Event(
        event=name,
        resource={"prefect.resource.id": "mlflow.model-version.trip-duration-fhv.3"},
        related=[
            {"prefect.resource.id": f"prefect.flow-run.{run}", "prefect.resource.role": "flow-run"},
            {
                "prefect.resource.id": "prefect.flow.1",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow,
            },
        ],
        occurred=T0,
        payload=payload,
        id=uuid.uuid4(),
    )
    message = message_of(event)
    assert message is not None
    assert (message.type, message.flow, message.run_id) == (kind, flow, run)
    assert message.body()["data"] == {"run_id": str(run), "flow": flow, **payload}
    assert message_of(event.model_copy(update={"event": "training-stack.other"})) is None


# -- the deliverer ----------------------------------------------------------------------------


class Receiver:
    """An httpx transport standing for a receiver: fails the first `failures` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            return httpx.Response(503, text="not now")
        return httpx.Response(204)


async def no_thread(call: Any, *args: Any) -> Any:
    return call(*args)


def deliverer(database: FakeDatabase, receiver: Receiver) -> Deliverer:
    return Deliverer(
        database,
        first_retry_seconds=0.01,
        allow_private=True,
        blocking=no_thread,
        transport=httpx.MockTransport(receiver),
    )


async def settle(database: FakeDatabase, until: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not until():
            await asyncio.sleep(0.01)


@pytest.mark.anyio
async def test_a_failing_receiver_gets_the_message_with_one_id_and_a_valid_signature() -> None:
    database, receiver = FakeDatabase(), Receiver(failures=3)
    hook = database.create_webhook("http://10.0.0.7/h", ["run.completed"], None, new_secret(), "t")
    secret = database.webhooks[hook.id][1]
    sender = deliverer(database, receiver)
    task = asyncio.create_task(sender.run())
    try:
        sender.offer(run_end(uuid.uuid4(), "COMPLETED", at=dt.datetime.now(dt.UTC)))
        sender.offer(run_end(uuid.uuid4(), "RUNNING"))  # no message
        await settle(database, lambda: sender.sent == 1)
    finally:
        task.cancel()
        await sender.close()
    assert len(receiver.requests) == 4 and sender.failed == 3
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    last = receiver.requests[-1]
    body = Verifier(secret).verify(last.content, dict(last.headers))
    assert body["type"] == "run.completed"
    [delivery] = database.list_deliveries(hook.id, 10)
    assert delivery.state == "delivered" and len(delivery.attempts) == 4
    assert [a["status"] for a in delivery.attempts] == [503, 503, 503, 204]
    assert delivery.attempts[0]["error"] == "HTTP 503: not now"


@pytest.mark.anyio
async def test_messages_of_one_run_go_in_order_and_a_refused_target_is_given_up() -> None:
    database, receiver = FakeDatabase(), Receiver(failures=2)
    database.create_webhook(
        "http://10.0.0.7/h", ["run.failed", "run.completed"], "train-model", new_secret(), "t"
    )
    sender = deliverer(database, receiver)
    run, now = uuid.uuid4(), dt.datetime.now(dt.UTC)
    first = run_end(run, "FAILED", at=now)
    second = run_end(run, "COMPLETED", at=now + dt.timedelta(seconds=1))
    other_flow = run_end(uuid.uuid4(), "FAILED", flow="load-data", at=now)
    for event in (second, first, other_flow):  # written out of order
        await sender._enqueue([message_of(event)])  # type: ignore[list-item]
    task = asyncio.create_task(sender.run())
    try:
        await settle(database, lambda: sender.sent == 2)
    finally:
        task.cancel()
    types = [r.headers["webhook-id"] for r in receiver.requests]
    assert types == [f"msg_{first.id}"] * 3 + [f"msg_{second.id}"]
    assert len(database.outbox) == 2  # load-data's run matches no subscription
    # A target that resolves inside is given up at once, not retried for a day.
    sender.allow_private = False
    refused = database.create_webhook("http://127.0.0.1:9/h", ["run.failed"], None, "whsec_x", "t")
    elsewhere = run_end(uuid.uuid4(), "FAILED", flow="load-data", at=dt.datetime.now(dt.UTC))
    await sender._enqueue([message_of(elsewhere)])  # type: ignore[list-item]
    task = asyncio.create_task(sender.run())
    try:
        await settle(database, lambda: sender.failed == 3)
    finally:
        task.cancel()
        await sender.close()
    [given_up] = database.list_deliveries(refused.id, 10)
    assert given_up.state == "failed" and given_up.attempts[0]["error"].startswith("refused:")
    assert given_up.next_attempt_at is None


@pytest.mark.anyio
async def test_catching_up_writes_the_missed_ends_once() -> None:
    database = FakeDatabase()
    hook = database.create_webhook("http://10.0.0.7/h", ["run.completed"], None, "whsec_x", "t")
    sender = deliverer(database, Receiver())
    missed = [run_end(uuid.uuid4(), at=dt.datetime.now(dt.UTC)) for _ in range(3)]
    asked: list[dt.datetime] = []

    async def read(since: dt.datetime) -> list[Event]:
        asked.append(since)
        return missed

    assert await sender.catch_up(read) == 3
    assert await sender.catch_up(read) == 3  # read again: recorded once all the same
    assert len(database.list_deliveries(hook.id, 10)) == 3
    # The second read started a minute before the newest event recorded.
    assert asked[1] == max(e.occurred for e in missed) - dt.timedelta(minutes=1)
    await sender.close()


# -- the routes -------------------------------------------------------------------------------


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


PUBLIC = {"hooks.example": ["93.184.215.14"], "inside.example": ["10.0.0.5"]}


@pytest.fixture
def client(database: FakeDatabase) -> TestClient:
    app = api_app(FakePrefect(), database)
    app.state.resolve = resolver(PUBLIC)  # no DNS from the tests
    return TestClient(app)


URLS = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "ftp", "HTTP", ""]),
        st.one_of(
            st.sampled_from([*PUBLIC, "[::1", "a:b@hooks.example", "x:99999"]), st.text(max_size=20)
        ),
        st.text(max_size=20),
    ),
)


@given(
    body=st.fixed_dictionaries(
        {"url": URLS, "events": st.lists(st.sampled_from([*webhooks.EVENT_TYPES, "x"]))},
        optional={"flow": st.one_of(st.none(), st.text(max_size=120))},
    )
)
def test_any_subscription_body_is_made_or_a_422_never_a_5xx(body: dict) -> None:
    database = FakeDatabase()
    app = api_app(FakePrefect(), database)
    app.state.resolve = resolver(PUBLIC)
    response = TestClient(app).post("/webhooks", json=body, headers=AUTH)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:  # a public name, or a public address written out
        host = urlsplit(body["url"]).hostname or ""
        assert host == "hooks.example" or not private(host)
    else:
        assert database.webhooks == {} and response.json()["errors"]


def test_a_webhook_is_made_listed_and_deleted(client: TestClient, database: FakeDatabase) -> None:
    operator = {"Authorization": f"Bearer {database.add_key('op', 'operator')}"}
    body = {"url": "http://93.184.215.14/h", "events": ["run.failed", "run.completed"]}
    made = client.post("/webhooks", json=body, headers=operator)
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["secret"].startswith("whsec_") and hook["created_by"] == "op"
    assert hook["events"] == ["run.completed", "run.failed"] and hook["flow"] is None
    listed = client.get("/webhooks", headers=operator).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert client.delete(f"/webhooks/{hook['id']}", headers=operator).status_code == 204
    assert client.delete(f"/webhooks/{hook['id']}", headers=operator).status_code == 404
    assert client.get("/webhooks", headers=operator).json()["webhooks"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://127.0.0.1:8000/h", "events": ["run.failed"]}, "body.url"),
        ({"url": "https://inside.example/h", "events": ["run.failed"]}, "body.url"),
        ({"url": "https://unknown.example/h", "events": ["run.failed"]}, "body.url"),
        ({"url": "file:///etc/passwd", "events": ["run.failed"]}, "body.url"),
        ({"url": "http://93.184.215.14/h", "events": []}, "body.events"),
        ({"url": "http://93.184.215.14/h", "events": ["run.started"]}, "body.events.0"),
        ({"url": "http://93.184.215.14/h", "events": ["run.failed"], "x": 1}, "body.x"),
    ],
)
def test_a_bad_webhook_is_a_422_by_field(
    client: TestClient, database: FakeDatabase, body: dict, field: str
) -> None:
    response = client.post("/webhooks", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]
    assert database.webhooks == {}


def test_webhooks_need_an_operator(client: TestClient, database: FakeDatabase) -> None:
    viewer = {"Authorization": f"Bearer {database.add_key('v', 'viewer')}"}
    body = {"url": "http://93.184.215.14/h", "events": ["run.failed"]}
    assert client.post("/webhooks", json=body, headers=viewer).status_code == 403
    assert client.get("/webhooks", headers=viewer).status_code == 403


def test_deliveries_are_listed_and_one_is_sent_again(
    client: TestClient, database: FakeDatabase
) -> None:
    hook = database.create_webhook("http://93.184.215.14/h", ["run.failed"], None, "whsec_x", "t")
    message = message_of(run_end(uuid.uuid4(), "FAILED", at=dt.datetime.now(dt.UTC)))
    assert message is not None and database.enqueue(message) == 1
    [row] = database.outbox.values()
    database.record_attempt(row["id"], 500, "HTTP 500: no", 12.0, None)
    page = client.get(f"/webhooks/{hook.id}/deliveries", headers=AUTH).json()
    [listed] = page["deliveries"]
    assert listed["state"] == "failed" and listed["message_id"] == message.id
    assert listed["attempts"][0]["status"] == 500
    again = client.post(f"/webhooks/{hook.id}/deliveries/{listed['id']}/redeliver", headers=AUTH)
    assert again.status_code == 202 and again.json()["state"] == "pending"
    unknown = client.post(f"/webhooks/{hook.id}/deliveries/{uuid.uuid4()}/redeliver", headers=AUTH)
    assert unknown.status_code == 404
    assert client.get(f"/webhooks/{uuid.uuid4()}/deliveries", headers=AUTH).status_code == 404
