"""An agent's state file (common.agents): replaced whole, never left half written."""

from pathlib import Path

from common.agents import ACTIVE, STANDBY, read_state, write_state


def test_the_state_file_is_replaced_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.state")
    assert read_state(path) is None and read_state(None) is None
    write_state(path, STANDBY)
    assert read_state(path) == STANDBY
    write_state(path, ACTIVE)
    assert read_state(path) == ACTIVE
    assert [p.name for p in tmp_path.iterdir()] == ["agent.state"]  # no partial file left
