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
