"""Start-up: `make dev` from the command to its banner, with the environments built.

Each run starts `python -m devstack` (what `make dev` runs) on free ports and a state
directory of its own, times it from the command to the banner ("Local stack is up"), then
stops it with Ctrl-C (SIGINT) and waits for it to exit. The first run of a state directory
starts from nothing (initdb, Prefect's and MLflow's migrations); the next ones find the
state of the one before, as a developer's second `make dev` does. `--runs N` makes N fresh
and N later starts, alternating, each in a new process.

With `--compose`, it times `docker compose up -d --wait` instead: the images built first
(untimed), then each run on fresh volumes under a project of its own (`startup-bench`,
removed with its volumes after each run), with `--env-file` (default `.env`, which `make
env` writes). It prints when each service started and became healthy, from Docker's events,
and how busy the machine's CPUs were meanwhile (/proc/stat): a start that keeps them all busy
gets shorter only with less work, not with another order.

    make bench-startup  # from the repository root, with the defaults; or, with options:
    PYTHONPATH=services/common:services/trainer:services/agent:services/autoscaler:\
services/api:services/devstack:services/mlflow:services/serving:tests \
        .venv/bin/python bench/startup.py [--runs 3] [--timeout 180] [--compose]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from devstack.stack import REPO
from testkit import makedev
from testkit.bench import p50

BANNER = makedev.HEADLINE.encode()


def start_to_banner(state_dir: Path, timeout: float) -> float:
    """Seconds from starting `python -m devstack` on `state_dir` to its banner; the stack is
    then stopped. RuntimeError (with the output's end) if it exits or times out first."""
    env = makedev.environment(state_dir)
    banner = threading.Event()
    output: list[bytes] = []
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert process.stdout is not None

    def read() -> None:
        for line in process.stdout:  # type: ignore[union-attr]
            output.append(line)
            if BANNER in line:
                banner.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while not banner.wait(0.05):
            if process.poll() is not None or time.monotonic() - started > timeout:
                tail = b"".join(output[-40:]).decode(errors="replace")
                raise RuntimeError(f"no banner (exit {process.returncode}):\n{tail}")
        return time.monotonic() - started
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        reader.join(5)


def cpu_seconds() -> tuple[float, float]:
    """The machine's CPU time so far, busy and in all (seconds, every CPU summed), from the
    first line of /proc/stat (Linux); idle and iowait are not busy."""
    with open("/proc/stat") as stat:
        ticks = [int(field) for field in stat.readline().split()[1:]]
    per_second = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / per_second, sum(ticks) / per_second


def compose_up(env_file: Path, project: str, timeout: float) -> tuple[float, list[str]]:
    """Seconds of `docker compose up -d --wait` on fresh volumes, and when each container
    started and became healthy (Docker's events), then the CPU busy meanwhile; the project
    is then removed."""

    def compose(*args: str, check: bool = True) -> None:
        command = ["docker", "compose", "-p", project, "--env-file", str(env_file), *args]
        subprocess.run(command, cwd=REPO, check=check, capture_output=True, timeout=timeout)

    compose("down", "-v", "--remove-orphans")
    label = f"label=com.docker.compose.project={project}"
    events = subprocess.Popen(
        ["docker", "events", "--format", "{{json .}}", "--filter", label],
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(events.stdout or ()), daemon=True).start()
    started = time.time()
    busy_before, all_before = cpu_seconds()
    try:
        compose("up", "-d", "--wait", "--wait-timeout", str(int(timeout)))
        took = time.time() - started
        busy_after, all_after = cpu_seconds()
        busy, available = busy_after - busy_before, all_after - all_before
        time.sleep(0.5)
    finally:
        events.terminate()
        compose("down", "-v", "--remove-orphans", check=False)
    steps = []
    for line in list(lines):
        event = json.loads(line)
        status = event.get("status", "")
        if status == "start" or status.startswith(("health_status", "die")):
            service = event["Actor"]["Attributes"].get("com.docker.compose.service", "?")
            steps.append(f"{event['timeNano'] / 1e9 - started:6.1f} s  {service:<11} {status}")
    steps.append(
        f"CPU busy {busy:.1f} of {available:.1f} CPU-s ({busy / available:.0%}, "
        f"{os.cpu_count()} CPUs): at full use, {busy / (os.cpu_count() or 1):.1f} s of work"
    )
    return took, steps


def main_compose(args: argparse.Namespace) -> None:
    build = ["docker", "compose", "--env-file", str(args.env_file), "build"]
    print("building the images (untimed) ...", flush=True)
    subprocess.run(build, cwd=REPO, check=True, capture_output=True)
    times = []
    for i in range(args.runs):
        took, steps = compose_up(args.env_file, "startup-bench", args.timeout)
        times.append(took)
        print(f"run {i + 1}: up -d --wait {took:.1f} s", flush=True)
        print("\n".join(f"    {step}" for step in steps), flush=True)
    print(f"\ndocker compose up -d --wait, fresh volumes, over {args.runs} runs, seconds")
    print(f"p50 {p50(times):.1f}  min {min(times):.1f}  max {max(times):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh and later starts, each")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to the banner")
    parser.add_argument("--compose", action="store_true", help="time Compose instead")
    parser.add_argument("--env-file", type=Path, default=REPO / ".env", help="with --compose")
    args = parser.parse_args()
    if args.compose:
        main_compose(args)
        return
    fresh: list[float] = []
    later: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as root:
        for i in range(args.runs):
            state = Path(root) / f"state-{i}"
            fresh.append(start_to_banner(state, args.timeout))
            print(f"run {i + 1}: fresh state {fresh[-1]:.1f} s", flush=True)
            later.append(start_to_banner(state, args.timeout))
            print(f"run {i + 1}: existing state {later[-1]:.1f} s", flush=True)
    print(f"\nmake dev -> banner over {args.runs} runs each, seconds")
    print(f"{'state':<10}{'p50':>8}{'min':>8}{'max':>8}")
    for name, values in (("fresh", fresh), ("existing", later)):
        print(f"{name:<10}{p50(values):>8.1f}{min(values):>8.1f}{max(values):>8.1f}")


if __name__ == "__main__":
    main()
