"""The agent's healthcheck (agent.health): a warm standby, or a worker that answers."""

import socket
from pathlib import Path

import pytest

from common.agents import ACTIVE, STANDBY, write_state


def test_health_is_a_warm_standby_or_a_worker_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import health

    path = tmp_path / "agent.state"
    monkeypatch.setenv("AGENT_STATE_FILE", str(path))
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setattr(
            health, "WORKER_HEALTH_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/health"
        )
        assert health.main() == 1  # still warming: no state yet, no worker
        write_state(str(path), STANDBY)
        assert health.main() == 0
        write_state(str(path), ACTIVE)
        assert health.main() == 1  # promoted, and its worker does not answer
