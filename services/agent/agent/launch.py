"""`python -m agent.launch`: start one flow run's engine from the agent's fork server.

The process worker runs this as the flow run's job `command`, with the run's environment
(PREFECT__FLOW_RUN_ID, the control channel, ...) and working directory. It asks the fork
server (agent.forkserver) on AGENT_FORKSERVER_SOCKET to fork a warm, pre-imported engine
with that environment, working directory and this process's stdin/stdout/stderr. It then
stands in for the engine: signals it receives go to the engine, and it ends as the engine
ends (same exit code, or killed by the same signal), so Prefect's cancellation and crash
detection see what they would see with `python -m prefect.engine`.

If the fork server is not there or declines, it execs the engine itself (`python -m
agent.engine`, which runs Prefect's): a run never depends on the fork server.

The standard library and common.agents only, nothing heavy: this starts in tens of
milliseconds. The wire protocol it speaks with the fork server is agent.protocol.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterable

from agent.protocol import (
    HEADER_BYTES,
    RELAYED_SIGNALS,
    STDIO_FDS,
    FrameDecoder,
    encode_frame,
    start_request,
)
from common.agents import FORKSERVER_SOCKET_ENV

# typing.TYPE_CHECKING without importing typing (agent.protocol says why).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The fork server answers within milliseconds; a longer silence means it is stuck.
REPLY_TIMEOUT_SECONDS = 10.0


class ForkServerUnavailable(RuntimeError):
    """The fork server cannot start this run; the caller starts a cold engine."""


def exit_code_to_status(code: int) -> tuple[str, int]:
    """How to end like the engine did: ("exit", code) or ("signal", signum).

    `code` is as from os.waitstatus_to_exitcode: negative when killed by a signal.
    """
    return ("signal", -code) if code < 0 else ("exit", code)


def present_fds(candidates: Iterable[int] = STDIO_FDS) -> list[int]:
    """The descriptors among `candidates` that are open (a worker may close stdin)."""
    present = []
    for fd in candidates:
        try:
            os.fstat(fd)
        except OSError:
            continue
        present.append(fd)
    return present


# -- the launcher ---------------------------------------------------------------------------


def _note(text: str) -> None:
    run_id = os.environ.get("PREFECT__FLOW_RUN_ID", "?")
    print(f"agent.launch: flow run {run_id}: {text}", file=sys.stderr, flush=True)


def _receive(
    sock: socket.socket, decoder: FrameDecoder, queue: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The next message, or None at end of stream; `queue` keeps messages read ahead."""
    while not queue:
        data = sock.recv(65536)
        if not data:
            return None
        queue.extend(decoder.feed(data))
    return queue.pop(0)


def _connect(path: str | None) -> socket.socket:
    if not path:
        raise ForkServerUnavailable(f"{FORKSERVER_SOCKET_ENV} is not set")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(REPLY_TIMEOUT_SECONDS)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise ForkServerUnavailable(f"cannot connect to {path}: {exc.strerror or exc}") from None
    return sock


def run_on_forkserver(path: str | None) -> int:
    """Have the fork server run the engine; return its exit code (negative: killed by signal).

    Raises ForkServerUnavailable before any engine started.
    """
    sock = _connect(path)
    decoder = FrameDecoder()
    queue: list[dict[str, Any]] = []
    fds = present_fds()
    ignored = [s for s in RELAYED_SIGNALS if signal.getsignal(s) == signal.SIG_IGN]
    frame = encode_frame(start_request(os.environ, os.getcwd(), sys.prefix, fds, ignored))
    try:
        # The descriptors ride with the header; the body follows as plain bytes.
        socket.send_fds(sock, [frame[:HEADER_BYTES]], fds)
        sock.sendall(frame[HEADER_BYTES:])
        reply = _receive(sock, decoder, queue)
    except OSError as exc:
        sock.close()
        raise ForkServerUnavailable(f"no answer: {exc}") from None
    if reply is None or "pid" not in reply:
        sock.close()
        reason = reply.get("error", reply) if reply else "connection closed"
        raise ForkServerUnavailable(f"declined: {reason}")

    pid = int(reply["pid"])
    server = [sock]  # emptied when the server is gone: then we signal the engine ourselves

    def relay(signum: int, _frame: object) -> None:
        try:
            if server:
                server[0].sendall(encode_frame({"signal": signum}))
            else:
                os.kill(pid, signum)
        except OSError:
            pass  # the engine or the server has just gone; the loop below notices

    for signum in RELAYED_SIGNALS:
        if signum not in ignored:  # the engine ignores those too
            signal.signal(signum, relay)
    sock.settimeout(None)  # the run may take hours
    try:
        while True:
            message = _receive(sock, decoder, queue)
            if message is None:
                break
            if "exit" in message:
                return int(message["exit"])
    finally:
        server.clear()
        sock.close()
    # The server died (a bug, or the OOM killer) while its child runs on: stay until the
    # engine ends, so that the worker keeps tracking and signalling it through us.
    _note(f"fork server went away while engine pid {pid} ran; waiting for it")
    while process_alive(pid):
        time.sleep(0.5)
    _note(f"engine pid {pid} ended; its exit status is lost")
    return 1


def process_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, with nobody to reap it, does not count)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # The state follows the parenthesised command name, which may contain spaces.
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (not Linux): ask the kernel, zombies included
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def exec_cold_engine() -> None:
    """Replace this process with the engine (`python -m agent.engine`: Prefect's, as the
    worker would start it, with its one repair)."""
    command = [sys.executable, "-m", "agent.engine"]
    os.execv(command[0], command)


def finish(code: int) -> None:
    """End this process as the engine ended."""
    how, value = exit_code_to_status(code)
    if how == "signal":
        if value != signal.SIGKILL:  # the one signal that takes no handler
            signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        value = 128 + value  # only if the signal did not end us (it was blocked)
    sys.exit(value)


def main() -> None:
    try:
        code = run_on_forkserver(os.environ.get(FORKSERVER_SOCKET_ENV))
    except ForkServerUnavailable as exc:
        _note(f"fork server unavailable ({exc}); starting a cold engine")
        exec_cold_engine()
        return
    finish(code)


if __name__ == "__main__":
    main()
