"""The fork server's wire protocol (agent.protocol): framing, start requests, and the requests
a warm process must refuse."""

import signal
import sys

import pytest

from agent.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    import_time_differences,
    refusal,
    start_request,
)

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
