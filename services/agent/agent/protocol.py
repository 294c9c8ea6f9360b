"""The fork server's wire protocol, which both ends import: the server (agent.forkserver) and
its client, the launcher (agent.launch).

Over the Unix socket at AGENT_FORKSERVER_SOCKET, each message is a frame: a 4-byte
big-endian length, then a JSON object.

- launcher -> server: one start request (`start_request`), the launcher's stdio descriptors
  riding with the frame's header (SCM_RIGHTS); then `{"signal": N}` for each signal to relay.
- server -> launcher: `{"pid": N}` once the engine is forked, or `{"error": reason}` when the
  server declines (`refusal`), and the launcher starts a cold engine; later `{"exit": code}`
  (negative: killed by that signal).
- A connection closed without a byte is a probe (`listening`), not a request.

Standard library only: the launcher starts in tens of milliseconds.
"""

from __future__ import annotations

import json
import signal
import socket
import struct
from collections.abc import Iterable, Mapping

# typing.TYPE_CHECKING without importing typing, which costs every run's launcher (agent.launch)
# milliseconds on the way to RUNNING.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROTOCOL_VERSION = 1
STDIO_FDS = (0, 1, 2)
# Signals a cold engine would receive from the worker (SIGTERM: cancel, shutdown) or from
# a terminal; SIGKILL cannot be relayed: the fork server kills the engine when we vanish.
RELAYED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
# Environment read by the interpreter or by Prefect's logging set-up at start-up: a warm
# process imported with other values cannot honour them, so such a run starts cold.
IMPORT_TIME_ENV_PREFIXES = ("PYTHON", "PREFECT_LOGGING_")

# A frame: its length (4 bytes, big-endian), then that many bytes of UTF-8 JSON.
_HEADER = struct.Struct("!I")
HEADER_BYTES = _HEADER.size
MAX_FRAME_BYTES = 16 * 1024 * 1024


class ProtocolError(ValueError):
    """A frame that is not valid for this protocol."""


def encode_frame(message: Mapping[str, Any]) -> bytes:
    """One frame: a 4-byte big-endian length, then the message as UTF-8 JSON."""
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Turns a byte stream, fed in pieces of any size, back into messages."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_FRAME_BYTES:
                raise ProtocolError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
            if len(self._buffer) < _HEADER.size + size:
                break
            body = bytes(self._buffer[_HEADER.size : _HEADER.size + size])
            del self._buffer[: _HEADER.size + size]
            try:
                message = json.loads(body)
            except ValueError as exc:
                raise ProtocolError(f"frame is not JSON: {exc}") from None
            if not isinstance(message, dict):
                raise ProtocolError("frame is not a JSON object")
            messages.append(message)
        return messages

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame."""
        return len(self._buffer)


def start_request(
    env: Mapping[str, str],
    cwd: str,
    prefix: str,
    fds: Iterable[int],
    ignored: Iterable[int] = (),
) -> dict[str, Any]:
    """What the launcher asks for: an engine with this environment, directory and stdio.

    `fds` are the stdio descriptors that travel with the request, in order; `ignored` the
    relayed signals this process inherited as ignored, which an exec'd engine would ignore.
    """
    return {
        "v": PROTOCOL_VERSION,
        "env": dict(env),
        "cwd": cwd,
        "prefix": prefix,
        "fds": list(fds),
        "ignored": sorted(ignored),
    }


def refusal(request: Mapping[str, Any], server_env: Mapping[str, str], prefix: str) -> str | None:
    """Why a warm process of this server cannot run `request` as a cold one would, or None."""
    if request.get("v") != PROTOCOL_VERSION:
        return f"protocol version {request.get('v')!r}, expected {PROTOCOL_VERSION}"
    env, cwd = request.get("env"), request.get("cwd")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        return "env is not a mapping of strings"
    if not isinstance(cwd, str) or not cwd:
        return "cwd is missing"
    fds = request.get("fds")
    if not isinstance(fds, list) or not set(fds) <= set(STDIO_FDS):
        return f"fds {fds!r} are not a subset of {list(STDIO_FDS)}"
    ignored = request.get("ignored")
    if not isinstance(ignored, list) or not set(ignored) <= set(RELAYED_SIGNALS):
        return f"ignored signals {ignored!r} are not among the relayed ones"
    if request.get("prefix") != prefix:
        return f"interpreter {request.get('prefix')!r} is not the fork server's {prefix!r}"
    differing = import_time_differences(server_env, env)
    if differing:
        return "import-time variables differ: " + ", ".join(differing)
    return None


def import_time_differences(server_env: Mapping[str, str], run_env: Mapping[str, str]) -> list[str]:
    """Names of variables read at start-up whose values differ between the two environments."""
    names = {k for k in (*server_env, *run_env) if k.startswith(IMPORT_TIME_ENV_PREFIXES)}
    return sorted(k for k in names if server_env.get(k) != run_env.get(k))


def listening(path: str) -> bool:
    """Whether a server accepts connections on the Unix socket `path` (the probe sends
    nothing, which the fork server takes as a probe)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
    return True
