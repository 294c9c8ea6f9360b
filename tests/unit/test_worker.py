"""The agent's worker (agent.worker): it waits for the fork server until it listens or dies."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from agent.worker import wait_for_forkserver


def test_the_worker_waits_for_the_fork_server_until_it_listens_or_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.sock")
    assert wait_for_forkserver(None, None) == "no fork server"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert "gone" in wait_for_forkserver(path, gone.pid, timeout=5)
    assert "not listening after 0 s" in wait_for_forkserver(path, None, timeout=0.3)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        assert wait_for_forkserver(path, os.getpid()).startswith("fork server warm")
