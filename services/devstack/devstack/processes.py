"""Every process of one `make dev`, found by a mark in its environment, for stops that finish.

`make dev` puts its state directory in its own environment (MARKER) before it starts
anything, so every process it starts, their children (MLflow's workers, the agents the
autoscaler starts, their fork servers) and the embedded PostgreSQL inherit it. That finds
them all, even those a crash left behind with parent 1, and never another stack's.
"""

import logging
import os
import time
from pathlib import Path

import psutil

logger = logging.getLogger("devstack")

MARKER = "DEVSTACK_STATE_DIR"
PID_FILE = "devstack.pid"


def mark(state_dir: Path) -> None:
    """Mark this process, and so everything it starts from now on, as `state_dir`'s."""
    os.environ[MARKER] = str(state_dir.resolve())


def marked(state_dir: Path) -> list[psutil.Process]:
    """The processes marked as `state_dir`'s, other than this one."""
    wanted, found = str(state_dir.resolve()), []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(MARKER) == wanted:
                found.append(process)
        except (psutil.Error, OSError):  # gone, a zombie, or not ours to read
            continue
    return found


def kill(processes: list[psutil.Process]) -> None:
    for process in processes:
        try:
            process.kill()
        except psutil.Error:
            continue


def running_devstack(state_dir: Path) -> int | None:
    """The pid of a `make dev` that is running on `state_dir`, if there is one."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
        process = psutil.Process(pid)
        if pid != os.getpid() and process.environ().get(MARKER) == str(state_dir.resolve()):
            return pid
    except (OSError, ValueError, psutil.Error):
        pass
    return None


def claim_state_dir(state_dir: Path, grace: float = 10) -> list[int]:
    """Record this process as `state_dir`'s `make dev`, after stopping what an earlier one
    left behind (it was killed, or its stop was cut short): SIGTERM, then SIGKILL after
    `grace` seconds. Returns the pids stopped. Raises RuntimeError when another `make dev`
    runs on the same directory."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if (pid := running_devstack(state_dir)) is not None:
        raise RuntimeError(
            f"make dev is already running on {state_dir} (pid {pid}): stop it first, or "
            "set STATE_DIR to another directory"
        )
    leftovers = marked(state_dir)
    if leftovers:
        pids = sorted(p.pid for p in leftovers)
        logger.warning(
            "stopping %d processes that an earlier make dev left running: pids %s",
            len(pids),
            " ".join(map(str, pids)),
        )
        for process in leftovers:
            try:
                process.terminate()
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(leftovers, timeout=grace)
        kill(alive)
        psutil.wait_procs(alive, timeout=5)
        time.sleep(0.5)  # the ports they held are free once their sockets close
    (state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    mark(state_dir)
    return sorted(p.pid for p in leftovers)
