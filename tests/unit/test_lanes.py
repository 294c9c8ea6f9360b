"""testkit.lanes: suites side by side, each log printed whole, the first failure's status, and
Ctrl-C passed to every lane."""

import io
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from testkit import lanes
from testkit.lanes import Lane, parse_lane, run


def _lanes(tmp_path: Path, **commands: str) -> list[Lane]:
    return [Lane(name, command, tmp_path / f"{name}.log") for name, command in commands.items()]


def test_lanes_run_at_once_and_each_log_is_printed_whole(tmp_path: Path) -> None:
    out = io.StringIO()
    began = time.monotonic()
    status = run(
        _lanes(tmp_path, slow="sleep 1; echo slow one; echo slow two", quick="sleep 1; echo quick"),
        out,
    )
    assert status == 0
    assert time.monotonic() - began < 1.9  # side by side, not one after the other
    text = out.getvalue()
    assert "===== lane slow: passed" in text and "slow one\nslow two\n" in text
    assert "===== lane quick: passed" in text and "quick\n" in text
    assert (tmp_path / "slow.log").read_text() == "slow one\nslow two\n"


def test_the_status_is_the_first_failure_s_and_every_lane_still_ends(tmp_path: Path) -> None:
    out = io.StringIO()
    status = run(_lanes(tmp_path, bad="echo broke; exit 3", good="sleep 0.6; echo fine"), out)
    assert status == 3
    text = out.getvalue()
    assert "===== lane bad: FAILED (exit 3)" in text and "broke" in text
    assert "===== lane good: passed" in text and "fine" in text


def test_progress_lines_say_how_far_each_running_lane_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lanes, "PROGRESS_SECONDS", 0.5)
    out = io.StringIO()
    log = "collected 12 items\n\ntests/a.py ....  [ 33%]\ntests/b.py .F"
    assert run(_lanes(tmp_path, suite=f"printf '%s' '{log}'; sleep 1.5"), out) == 0
    assert "lanes: suite: 6 of 12 tests, 1 failed (0:0" in out.getvalue()


def test_ctrl_c_reaches_every_lane_and_the_status_says_interrupted(tmp_path: Path) -> None:
    out = io.StringIO()
    # Each lane says it got SIGINT (as pytest tears its stack down) and exits.
    command = "trap 'echo interrupted; exit 2' INT; sleep 30 & wait"
    threading.Timer(0.7, os.kill, (os.getpid(), signal.SIGINT)).start()
    began = time.monotonic()
    status = run(_lanes(tmp_path, one=command, two=command), out)
    assert status == 130
    assert time.monotonic() - began < 10
    assert out.getvalue().count("=====\ninterrupted\n") == 2


@pytest.mark.parametrize("text", ["no-equals", "=cmd", "two words=cmd", "name=  "])
def test_a_lane_not_written_name_equals_command_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="NAME=COMMAND"):
        parse_lane(text)


def test_lane_names_must_not_repeat(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        lanes.main(["--logs", str(tmp_path), "a=true", "a=false"])
