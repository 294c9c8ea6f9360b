"""The access line of our API and serving (common.web.edge): one per request, with the caller
and role once the request was authenticated. Through the front door it is the request's only
line (the door writes none for what they answer: docs/gateway.md), so it must say who."""

import logging

import pytest
from fastapi.testclient import TestClient

from testkit.apps import AUTH, FakeDatabase, FakePrefect, api_app


def _lines(caplog: pytest.LogCaptureFixture, path: str) -> list[logging.LogRecord]:
    return [
        r for r in caplog.records if r.name == "api.access" and r.getMessage().split()[1] == path
    ]


def test_an_authenticated_request_s_line_names_its_caller_and_role(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = TestClient(api_app(FakePrefect(), FakeDatabase()))
    with caplog.at_level(logging.INFO, logger="api.access"):
        assert client.get("/flows", headers=AUTH).status_code == 200
        assert client.get("/flows").status_code == 401
        assert client.get("/healthz").status_code == 200
    [known] = _lines(caplog, "/flows")[:1]
    assert (known.status, known.caller, known.role) == (200, "ci", "admin")
    # Refused before anyone was known, and open health: no caller to name.
    refused, health = _lines(caplog, "/flows")[1], _lines(caplog, "/healthz")[0]
    assert refused.status == 401 and not hasattr(refused, "caller")
    assert health.status == 200 and not hasattr(health, "caller")
