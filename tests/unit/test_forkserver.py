"""The fork server (agent.forkserver): its socket per agent, what it reads as a request, and
the model schemas it builds before it forks."""

import os
import socket
import sys

import pytest

from agent import forkserver
from agent.__main__ import forkserver_command
from agent.protocol import ProtocolError, encode_frame, start_request
from agent.settings import AgentSettings, default_forkserver_socket


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
        request = start_request({"PATH": "/bin"}, "/tmp/run", sys.prefix, [0, 1, 2])
        client.sendall(encode_frame(request)[:10])
        client.close()
        with pytest.raises(ProtocolError, match="closed before a whole request"):
            _read_request(server)


def test_the_fork_server_builds_deferred_model_schemas_before_it_forks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import textwrap
    import types

    module = types.ModuleType("deferred_models")
    monkeypatch.setitem(sys.modules, "deferred_models", module)
    # A model that refers to one defined after it: pydantic defers its schema.
    source = """
        from pydantic import BaseModel

        class Run(BaseModel):
            state: "State | None" = None

        class State(BaseModel):
            name: str
    """
    exec(textwrap.dedent(source), module.__dict__)
    assert not module.Run.__pydantic_complete__
    assert forkserver.complete_models("deferred_models") == 1
    assert module.Run.__pydantic_complete__
    assert module.Run(state={"name": "Running"}).state.name == "Running"
    assert forkserver.complete_models("deferred_models") == 0  # nothing left to build
