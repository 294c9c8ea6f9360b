"""agent.outages: within one of Prefect's attempts, a call to a server that is away is sent
again every poll until the server answers or the window ends; what Prefect would not retry
is not retried either. Prefect's own retries are set to 0 here, so that any second send is
the ride-out's."""

import asyncio
from collections.abc import Callable, Iterator
from types import SimpleNamespace

import httpx
import pytest
from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient
from prefect.settings import (
    PREFECT_CLIENT_MAX_RETRIES,
    PREFECT_CLIENT_RETRY_EXTRA_CODES,
    temporary_settings,
)

from agent import outages

WINDOW, POLL = 0.3, 0.01
URL = "http://prefect.test/api"


def unpatched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect's own methods for this test, even where an earlier test (one that ran an
    engine or a worker's main) installed the ride-out with its defaults."""
    for client in (PrefectHttpxAsyncClient, PrefectHttpxSyncClient):
        method = client._send_with_retry
        monkeypatch.setattr(client, "_send_with_retry", getattr(method, "__wrapped__", method))


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Installed with a short window, for this test only; Prefect's own sleeps between its
    attempts (it sleeps after its last one too) are skipped."""
    import prefect.client.base as base

    async def no_sleep(seconds: float) -> None:
        pass

    monkeypatch.setattr(base, "anyio", SimpleNamespace(sleep=no_sleep))
    monkeypatch.setattr(base, "time", SimpleNamespace(sleep=lambda seconds: None))
    unpatched(monkeypatch)
    outages.install(seconds=WINDOW, poll=POLL)
    # As the agent's runs have them (common.contract.RUN_ENVIRONMENT), but no retries.
    with temporary_settings(
        {PREFECT_CLIENT_MAX_RETRIES: 0, PREFECT_CLIENT_RETRY_EXTRA_CODES: {500}}
    ):
        yield


def answers(*statuses: int, headers: dict[str, str] | None = None) -> tuple[list[int], Callable]:
    """A server answering `statuses` in turn, then the last one for good; and its log."""
    sent: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        status = statuses[min(len(sent), len(statuses) - 1)]
        sent.append(status)
        return httpx.Response(status, json={}, headers=headers if status != 200 else None)

    return sent, handler


def get_sync(handler: Callable) -> httpx.Response:
    transport = httpx.MockTransport(handler)
    with PrefectHttpxSyncClient(
        transport=transport, base_url=URL, enable_csrf_support=False
    ) as client:
        return client.get("/flow_runs/x")


def get_async(handler: Callable) -> httpx.Response:
    async def get() -> httpx.Response:
        transport = httpx.MockTransport(handler)
        async with PrefectHttpxAsyncClient(
            transport=transport, base_url=URL, enable_csrf_support=False
        ) as client:
            return await client.get("/flow_runs/x")

    return asyncio.run(get())


@pytest.mark.parametrize("get", [get_sync, get_async], ids=["sync", "async"])
def test_a_call_goes_through_at_the_first_answer_after_an_outage(installed, get) -> None:
    sent, handler = answers(500, 503, 502, 200)
    assert get(handler).status_code == 200
    assert sent == [500, 503, 502, 200]


@pytest.mark.parametrize("get", [get_sync, get_async], ids=["sync", "async"])
def test_an_outage_longer_than_the_window_is_handed_to_prefect_s_retries(installed, get) -> None:
    sent, handler = answers(500)
    with pytest.raises(httpx.HTTPStatusError):
        get(handler)
    # Sent again every POLL until the window ended, then no more (Prefect retries 0 times).
    assert 2 <= len(sent) <= WINDOW / POLL + 1


@pytest.mark.parametrize("get", [get_sync, get_async], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("status", "headers"),
    [(404, None), (409, None), (429, None), (503, {"Retry-After": "5"}), (408, None)],
)
def test_what_is_not_an_outage_is_sent_once(installed, get, status, headers) -> None:
    sent, handler = answers(status, 200, headers=headers)
    with pytest.raises(httpx.HTTPStatusError) as raised:
        get(handler)
    assert sent == [status] and raised.value.response.status_code == status


def test_a_refused_first_connection_is_not_ridden_out(installed) -> None:
    # Prefect retries a refused connection only once it has connected: a wrong URL fails
    # at once, and still does.
    sent: list[str] = []

    def refused(request: httpx.Request) -> httpx.Response:
        sent.append("refused")
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(httpx.ConnectError):
        get_sync(refused)
    assert sent == ["refused"]


def test_a_server_cut_mid_call_is_asked_again(installed) -> None:
    sent: list[str] = []

    def cut_then_answer(request: httpx.Request) -> httpx.Response:
        sent.append("call")
        if len(sent) < 3:
            raise httpx.ReadError("connection reset", request=request)
        return httpx.Response(200, json={})

    assert get_async(cut_then_answer).status_code == 200
    assert len(sent) == 3


def test_install_is_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    unpatched(monkeypatch)
    outages.install()
    installed = (PrefectHttpxAsyncClient._send_with_retry, PrefectHttpxSyncClient._send_with_retry)
    outages.install()
    assert installed == (
        PrefectHttpxAsyncClient._send_with_retry,
        PrefectHttpxSyncClient._send_with_retry,
    )
    assert PrefectHttpxSyncClient._send_with_retry.__wrapped__.__qualname__ == (
        "PrefectHttpxSyncClient._send_with_retry"
    )
