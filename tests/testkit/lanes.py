"""`python -m testkit.lanes [--logs DIR] NAME=COMMAND ...`: test suites side by side.

Each suite (a lane) runs as a shell command in a process group of its own, its output into
`DIR/NAME.log` (tail it to watch a lane). The suites that run together each start a stack
of their own on free ports and spend most of their time waiting on one (an outage held
for 100 s, a heartbeat let lapse), so that together they take the time of the longest, not
the sum. Every 60 s one line says how far each lane is; each lane's log is printed whole
when it ends, and the exit status is the first failed lane's (0 when all pass).

Ctrl-C (or SIGTERM) is passed to every lane, whose pytest then tears its stack down; lanes
still running 60 s later are killed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

PROGRESS_SECONDS = 60.0
STOP_GRACE_SECONDS = 60.0
# pytest's progress: "collected 12 items", then a line per file, "tests/x.py ..F." (the
# column "[ 45%]" comes only at the end of a line, after minutes in a slow file).
COLLECTED = re.compile(rb"collected (\d+) items?")
RESULTS = re.compile(rb"^tests/\S+\.py ([.FEsxX]*)", re.MULTILINE)


@dataclass
class Lane:
    name: str
    command: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                shell=True,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a signal reaches the whole lane
            )

    def progress(self) -> str:
        """`name: 5 of 12 tests (3:10)`, or `..., 1 failed`, from the pytest run in its log
        (the last one, for a lane that runs several)."""
        text = self.log.read_bytes()
        collected = list(COLLECTED.finditer(text))
        if not collected:
            return f"{self.name}: starting ({self.took()})"
        results = b"".join(RESULTS.findall(text[collected[-1].end() :]))
        failed = sum(results.count(mark) for mark in (b"F", b"E"))
        at = f"{len(results)} of {int(collected[-1].group(1))} tests"
        return f"{self.name}: {at}{f', {failed} failed' if failed else ''} ({self.took()})"

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def took(self) -> str:
        return _minutes((self.ended or time.monotonic()) - self.started)

    def finish(self, out: TextIO) -> int:
        """Print the ended lane's verdict and whole log; its exit status."""
        self.ended = time.monotonic()
        code = self.returncode() or 0
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"\n===== lane {self.name}: {verdict} in {self.took()} =====", file=out)
        out.write(self.log.read_text(errors="replace"))
        out.flush()
        return code

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # ended meanwhile
                os.killpg(self.process.pid, signum)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def parse_lane(text: str) -> tuple[str, str]:
    """`NAME=COMMAND` as (name, command); argparse turns the ValueError into a usage error."""
    name, sep, command = text.partition("=")
    if not sep or not re.fullmatch(r"[\w-]+", name) or not command.strip():
        raise ValueError(f"not NAME=COMMAND: {text!r}")
    return name, command


def run(lanes: list[Lane], out: TextIO = sys.stdout) -> int:
    """Run `lanes` at once; print each log as its lane ends; return the first failure's
    status."""
    kill_at: list[float] = []  # set by Ctrl-C: when lanes still running get SIGKILL

    def stop(_signum: int, _frame: object) -> None:
        kill_at[:] = [time.monotonic() + STOP_GRACE_SECONDS]
        for lane in lanes:
            lane.signal(signal.SIGINT)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for lane in lanes:
            lane.start()
            print(f"lane {lane.name}: {lane.command}  (log: {lane.log})", file=out, flush=True)
        status = 0
        running = list(lanes)
        next_progress = time.monotonic() + PROGRESS_SECONDS
        while running:
            time.sleep(0.5)
            for lane in [lane for lane in running if lane.returncode() is not None]:
                running.remove(lane)
                code = lane.finish(out)
                status = status or code
            if kill_at and time.monotonic() > kill_at[0]:
                for lane in running:
                    lane.signal(signal.SIGKILL)
            if running and time.monotonic() >= next_progress:
                print("lanes: " + ", ".join(lane.progress() for lane in running), file=out)
                out.flush()
                next_progress = time.monotonic() + PROGRESS_SECONDS
        took = ", ".join(f"{lane.name} {lane.took()}" for lane in lanes)
        print(f"lanes: {took}", file=out, flush=True)
        return 130 if kill_at else status
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.lanes", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--logs", type=Path, default=Path("var/test-logs"), help="where the logs go"
    )
    parser.add_argument("lanes", nargs="+", type=parse_lane, metavar="NAME=COMMAND")
    args = parser.parse_args(argv)
    names = [name for name, _ in args.lanes]
    if len(set(names)) != len(names):
        parser.error(f"lane names repeat: {names}")
    args.logs.mkdir(parents=True, exist_ok=True)
    lanes = [Lane(name, command, args.logs / f"{name}.log") for name, command in args.lanes]
    return run(lanes)


if __name__ == "__main__":
    sys.exit(main())
