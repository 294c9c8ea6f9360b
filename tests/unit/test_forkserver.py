"""The fork server's and launcher's pure logic: framing, requests, environments, exit codes."""

import os
import signal
import socket
import sys

import pytest

from agent.__main__ import forkserver_command
from agent.launch import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    exit_code_to_status,
    import_time_differences,
    present_fds,
    process_alive,
    refusal,
    start_request,
)
from agent.settings import AgentSettings, default_forkserver_socket

ENV = {"PATH": "/bin", "PYTHONPATH": "a:b", "PREFECT_API_URL": "http://x/api"}


def _request(**changes: object) -> dict[str, object]:
    request = start_request(ENV, "/tmp/run", sys.prefix, [0, 1, 2])
    request.update(changes)
    return request


def test_frames_round_trip_whatever_the_chunking() -> None:
    messages = [{"pid": 12}, {"signal": 15}, {"env": {"K": "v" * 70_000}}, {"exit": -9}]
    stream = b"".join(encode_frame(m) for m in messages)
    for chunk in (1, 3, 4, 5, 1000, len(stream)):
        decoder = FrameDecoder()
        decoded = []
        for start in range(0, len(stream), chunk):
            decoded += decoder.feed(stream[start : start + chunk])
        assert decoded == messages
        assert decoder.pending == 0


def test_an_incomplete_frame_waits_for_the_rest() -> None:
    frame = encode_frame({"exit": 0})
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending == len(frame) - 1
    assert decoder.feed(frame[-1:]) == [{"exit": 0}]


@pytest.mark.parametrize(
    "data",
    [
        (MAX_FRAME_BYTES + 1).to_bytes(4, "big"),  # announced too large
        (2).to_bytes(4, "big") + b"{x",  # not JSON
        (2).to_bytes(4, "big") + b"[]",  # not an object
    ],
)
def test_bad_frames_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(data)


def test_a_start_request_carries_env_cwd_interpreter_and_fds() -> None:
    request = start_request(ENV, "/tmp/run", "/venv", [1, 2], [signal.SIGINT])
    assert request == {
        "v": PROTOCOL_VERSION,
        "env": ENV,
        "cwd": "/tmp/run",
        "prefix": "/venv",
        "fds": [1, 2],
        "ignored": [signal.SIGINT],
    }
    assert refusal(_request(), ENV, sys.prefix) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"v": 99}, "protocol version"),
        ({"env": {"A": 1}}, "env is not a mapping of strings"),
        ({"cwd": ""}, "cwd is missing"),
        ({"fds": [0, 5]}, "are not a subset"),
        ({"ignored": [signal.SIGKILL]}, "not among the relayed ones"),
        ({"prefix": "/other/venv"}, "is not the fork server's"),
        ({"env": {**ENV, "PYTHONPATH": "c"}}, "import-time variables differ: PYTHONPATH"),
    ],
)
def test_requests_a_warm_process_cannot_honour_are_refused(
    changes: dict[str, object], reason: str
) -> None:
    assert reason in (refusal(_request(**changes), ENV, sys.prefix) or "")


def test_only_start_up_variables_must_match() -> None:
    run_env = {
        **ENV,
        "PREFECT__FLOW_RUN_ID": "1",  # per run: read by the engine, at run time
        "PREFECT_API_URL": "http://other/api",  # settings are read again in the child
        "SYNTHETIC_ROWS": "1500",
        "PREFECT_LOGGING_LEVEL": "DEBUG",  # logging is configured at import
        "PYTHONHASHSEED": "0",
    }
    assert import_time_differences(ENV, run_env) == ["PREFECT_LOGGING_LEVEL", "PYTHONHASHSEED"]
    assert import_time_differences(ENV, {k: v for k, v in ENV.items() if k != "PYTHONPATH"}) == [
        "PYTHONPATH"
    ]


def test_exit_codes_map_to_an_exit_or_the_same_signal() -> None:
    assert exit_code_to_status(0) == ("exit", 0)
    assert exit_code_to_status(1) == ("exit", 1)
    assert exit_code_to_status(-signal.SIGTERM) == ("signal", signal.SIGTERM)
    assert exit_code_to_status(-signal.SIGKILL) == ("signal", signal.SIGKILL)


def test_only_open_descriptors_are_sent() -> None:
    read, write = os.pipe()
    os.close(write)
    try:
        assert present_fds([read, write]) == [read]
    finally:
        os.close(read)


def test_process_alive_tells_running_from_gone() -> None:
    assert process_alive(os.getpid())
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert not process_alive(pid)


def test_socket_path_is_per_agent_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_FORKSERVER_SOCKET", raising=False)
    path = AgentSettings().agent_forkserver_socket
    assert path == default_forkserver_socket()
    assert str(os.getpid()) in path and len(path.encode()) < 100  # AF_UNIX limit: 108
    monkeypatch.setenv("AGENT_FORKSERVER_SOCKET", "/run/agent/fs.sock")
    monkeypatch.setenv("AGENT_FORKSERVER", "false")
    settings = AgentSettings()
    assert settings.agent_forkserver_socket == "/run/agent/fs.sock"
    assert not settings.agent_forkserver
    assert forkserver_command(settings)[1:] == [
        "-m",
        "agent.forkserver",
        "--socket",
        "/run/agent/fs.sock",
    ]


def test_a_connection_that_sends_nothing_is_a_probe_not_a_bad_request() -> None:
    from agent.forkserver import ListenProbe, _read_request

    server, client = socket.socketpair()
    with server, client:
        client.close()  # the worker checking that the fork server listens
        with pytest.raises(ListenProbe):
            _read_request(server)
    server, client = socket.socketpair()
    with server, client:
        client.sendall(encode_frame(_request())[:10])
        client.close()
        with pytest.raises(ProtocolError, match="closed before a whole request"):
            _read_request(server)
