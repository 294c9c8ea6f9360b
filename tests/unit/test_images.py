"""The images run the same commands as local mode, as non-root, from the one lock."""

import json
import re
from pathlib import Path

import pytest

from devstack.stack import REPO, SERVICE_COMMANDS


def _dockerfile(service: str) -> str:
    return (REPO / "services" / service / "Dockerfile").read_text()


SERVICES = ["server", "trainer", "agent", "api", "mlflow", "serving"]


@pytest.mark.parametrize("service", SERVICES)
def test_container_command_is_the_local_command(service: str) -> None:
    [cmd] = re.findall(r"^CMD (\[.*\])$", _dockerfile(service), flags=re.M)
    program, *args = SERVICE_COMMANDS[service]
    # Local mode names MLflow's python by its path: the server has a venv of its own.
    assert json.loads(cmd) == [Path(program).name, *args]


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_non_root_and_installs_the_lock(service: str) -> None:
    text = _dockerfile(service)
    if service in ("mlflow", "serving"):  # their own locks
        text = text.replace(f"services/{service}/requirements.lock", "requirements.lock")
    assert re.search(r"^USER app$", text, flags=re.M)
    assert "pip install --no-deps --require-hashes -r /tmp/requirements.lock" in text


def test_compose_publishes_only_the_uis_and_the_api_on_loopback() -> None:
    compose = Path(REPO / "docker-compose.yaml").read_text()
    published = re.findall(r'^\s+- "([\d.]+:\d+:\d+)"$', compose, flags=re.M)
    assert published == [
        "127.0.0.1:4200:4200",
        "127.0.0.1:5000:5000",
        "127.0.0.1:8000:8000",
        "127.0.0.1:8001:8001",
    ]


def _pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.M))


def test_the_serving_lock_pins_what_the_stack_pins_and_no_prefect() -> None:
    stack = _pins(REPO / "requirements.lock")
    serving = _pins(REPO / "services" / "serving" / "requirements.lock")
    assert {name: version for name, version in serving.items() if stack.get(name) != version} == {}
    assert "prefect" not in serving and "scikit-learn" in serving and "mlflow-skinny" in serving
