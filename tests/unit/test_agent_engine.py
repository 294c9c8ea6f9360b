"""agent.engine: Prefect's engine, and a run left Cancelling by an engine that failed as it
was cancelled is marked Cancelled (against a fake client; the real race is in
tests/integration/test_backfills.py, where cancelled one-second runs end so)."""

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prefect.client.schemas.objects import State, StateType

from agent import engine

RUN = str(uuid.uuid4())


class Client:
    def __init__(self, state: StateType | None, *, down: bool = False) -> None:
        self.state, self.down = state, down
        self.set: list[State] = []

    def read_flow_run(self, run_id: uuid.UUID) -> Any:
        if self.down:
            raise ConnectionError("refused")
        state = State(type=self.state) if self.state else None
        return type("Run", (), {"id": run_id, "state": state})

    def set_flow_run_state(self, run_id: uuid.UUID, state: State) -> None:
        assert str(run_id) == RUN
        self.set.append(state)


@pytest.fixture(autouse=True)
def prefect_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine.main wraps Prefect's heartbeats, TLS contexts and HTTP retries for the process:
    for a test only."""
    import importlib

    from prefect import flow_engine
    from prefect.client.base import PrefectHttpxAsyncClient, PrefectHttpxSyncClient

    from agent import tls

    monkeypatch.setattr(flow_engine, "_send_heartbeats", flow_engine._send_heartbeats)
    for client in (PrefectHttpxAsyncClient, PrefectHttpxSyncClient):
        monkeypatch.setattr(client, "_send_with_retry", client._send_with_retry)
    for name in tls.PREFECT_MODULES:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "ssl", module.ssl)


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Client:
    fake = Client(StateType.CANCELLING)

    @contextlib.contextmanager
    def get_client(sync_client: bool) -> Iterator[Client]:
        assert sync_client
        yield fake

    monkeypatch.setattr("prefect.client.orchestration.get_client", get_client)
    return fake


def test_a_run_left_cancelling_is_cancelled(client: Client) -> None:
    assert engine.settle_cancelling(RUN)
    [state] = client.set
    assert state.type == StateType.CANCELLED and state.message == engine.ENDED_WHILE_CANCELLING


@pytest.mark.parametrize("state", [StateType.COMPLETED, StateType.FAILED, StateType.RUNNING, None])
def test_any_other_run_is_left_alone(client: Client, state: StateType | None) -> None:
    client.state = state
    assert not engine.settle_cancelling(RUN) and client.set == []


def test_the_server_away_leaves_it_and_says_so(
    client: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    client.down = True
    assert not engine.settle_cancelling(RUN)
    assert f"flow run {RUN}: its cancellation was not settled: refused" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ending", "settled"),
    [(None, False), (SystemExit(0), False), (SystemExit(1), True), (RuntimeError("x"), True)],
)
def test_only_an_engine_that_fails_is_checked(
    monkeypatch: pytest.MonkeyPatch, ending: BaseException | None, settled: bool
) -> None:
    calls: list[str] = []
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", RUN)
    monkeypatch.setattr(engine, "settle_cancelling", calls.append)

    def run_module(name: str, run_name: str, alter_sys: bool) -> None:
        assert (name, run_name, alter_sys) == ("prefect.engine", "__main__", True)
        if ending is not None:
            raise ending

    monkeypatch.setattr(engine.runpy, "run_module", run_module)
    with contextlib.suppress(SystemExit, RuntimeError):
        engine.main()
    assert calls == ([RUN] if settled else [])


class HeartbeatingEngine:
    """What Prefect's `_send_heartbeats` reads of a flow run engine."""

    heartbeat_seconds = 30
    flow_run = None

    def __init__(self) -> None:
        import logging

        self.logger = logging.getLogger("test.engine")
        self.beats = 0

    def _build_heartbeat_event_template(self) -> tuple[dict[str, str], list[Any]]:
        return {}, []

    def _emit_flow_run_heartbeat(self, resource: object, related: object) -> None:
        self.beats += 1


def _heartbeat_threads() -> list[Any]:
    import threading

    return [t for t in threading.enumerate() if "heartbeat_loop" in repr(getattr(t, "_args", ""))]


def test_a_finished_engine_does_not_wait_for_its_heartbeat_thread() -> None:
    import time

    from prefect import flow_engine

    run = HeartbeatingEngine()
    with flow_engine._send_heartbeats(run):  # Prefect's own: joins its thread
        time.sleep(0.05)
    assert run.beats == 1 and not _heartbeat_threads()

    engine.heartbeats_not_joined()
    wrapper = flow_engine._send_heartbeats
    engine.heartbeats_not_joined()  # twice: one wrapper
    assert flow_engine._send_heartbeats is wrapper
    with flow_engine._send_heartbeats(run):
        time.sleep(0.05)
    # The run is over; its heartbeat thread still sleeps out its second, without us.
    [thread] = _heartbeat_threads()
    assert thread.daemon
    thread.join(5)
    assert not thread.is_alive() and run.beats == 2
