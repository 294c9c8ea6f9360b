"""The images run the same commands as local mode, as non-root, from the one lock."""

import json
import re
from pathlib import Path

import pytest

from devstack.stack import REPO, SERVICE_COMMANDS


def _dockerfile(service: str) -> str:
    return (REPO / "services" / service / "Dockerfile").read_text()


@pytest.mark.parametrize("service", ["server", "trainer", "agent", "api"])
def test_container_command_is_the_local_command(service: str) -> None:
    [cmd] = re.findall(r"^CMD (\[.*\])$", _dockerfile(service), flags=re.M)
    local = SERVICE_COMMANDS[service]
    assert json.loads(cmd) == local


@pytest.mark.parametrize("service", ["server", "trainer", "agent", "api"])
def test_image_is_non_root_and_installs_the_lock(service: str) -> None:
    text = _dockerfile(service)
    assert re.search(r"^USER app$", text, flags=re.M)
    assert "pip install --no-deps --require-hashes -r /tmp/requirements.lock" in text


def test_compose_publishes_only_ui_and_api_on_loopback() -> None:
    compose = Path(REPO / "docker-compose.yaml").read_text()
    published = re.findall(r'^\s+- "([\d.]+:\d+:\d+)"$', compose, flags=re.M)
    assert published == ["127.0.0.1:4200:4200", "127.0.0.1:8000:8000"]
