"""The images run the same commands as local mode, as non-root, each from its own lock whose
versions are the stack's."""

import json
import re
from pathlib import Path

import pytest
import yaml

from devstack.stack import REPO, SERVICE_COMMANDS


def _dockerfile(service: str) -> str:
    return (REPO / "services" / service / "Dockerfile").read_text()


# The one build recipe: every image's first stage copies it in and runs it.
BUILD_SCRIPT = REPO / "services" / "build" / "venv.sh"


def _build(service: str) -> str:
    """What builds the image: its Dockerfile, then the shared recipe its first stage runs."""
    text = _dockerfile(service)
    assert "COPY services/build/venv.sh /tmp/venv.sh" in text
    assert re.search(r"^RUN sh /tmp/venv.sh\b", text, flags=re.M)
    return text + BUILD_SCRIPT.read_text()


SERVICES = ["server", "trainer", "agent", "api", "mlflow", "serving"]


@pytest.mark.parametrize("service", SERVICES)
def test_container_command_is_the_local_command(service: str) -> None:
    [cmd] = re.findall(r"^CMD (\[.*\])$", _dockerfile(service), flags=re.M)
    program, *args = SERVICE_COMMANDS[service]
    # Local mode names MLflow's python by its path: the server has a venv of its own.
    assert json.loads(cmd) == [Path(program).name, *args]


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_non_root_and_installs_its_lock(service: str) -> None:
    text = _build(service)
    assert re.search(r"^USER app$", text, flags=re.M)
    assert f"COPY services/{service}/requirements.lock /tmp/requirements.lock" in text
    assert "install --no-deps --require-hashes \\\n        -r /tmp/requirements.lock" in text
    # Built in a first stage; the final one takes the venv without test folders.
    assert "find /opt/venv/lib -depth -type d -name tests -exec rm -rf {} +" in text
    assert "COPY --from=build /opt/venv /opt/venv" in text


def test_every_image_builds_its_venv_by_the_one_recipe() -> None:
    # The first stage is the same four lines everywhere but for the lock and what the image
    # drops; the recipe itself is written once.
    for service in SERVICES:
        stage = _dockerfile(service).split("\nFROM python:3.11-slim\n")[0]
        lines = [line for line in stage.splitlines()[1:] if not line.startswith("#")]
        assert lines[:3] == [
            "FROM python:3.11-slim AS build",
            "COPY services/build/venv.sh /tmp/venv.sh",
            f"COPY services/{service}/requirements.lock /tmp/requirements.lock",
        ]
        assert lines[3].startswith("RUN sh /tmp/venv.sh"), service
        assert "pip" not in "\n".join(lines[3:]), service
    assert "!services/build/venv.sh" in (REPO / ".dockerignore").read_text()


def test_compose_publishes_only_the_front_door() -> None:
    """One published port, the gateway's (resolved values: tests/unit/test_gateway.py)."""
    compose = Path(REPO / "docker-compose.yaml").read_text()
    published = re.findall(r'^\s+- "(.*:\d+)"$', compose, flags=re.M)
    assert published == ["${GATEWAY_BIND:-127.0.0.1:8443}:8443"]


def test_the_gateway_image_runs_nginx_as_non_root_with_our_config() -> None:
    text = _dockerfile("gateway")
    assert text.startswith("# ") and "\nFROM nginx:1.27\n" in text
    assert re.search(r"^USER 101:101$", text, flags=re.M)
    assert "COPY services/gateway/nginx.conf /etc/nginx/nginx.conf" in text
    # door-run renders the upstreams' addresses, then execs nginx (tests/unit/test_gateway.py).
    assert json.loads(re.findall(r"^CMD (\[.*\])$", text, flags=re.M)[0]) == ["door-run"]
    assert "COPY services/gateway/door-run /usr/local/bin/door-run" in text
    assert (REPO / "services" / "gateway" / "door-run").stat().st_mode & 0o111
    assert "exec nginx -g 'daemon off;'" in (REPO / "services" / "gateway" / "door-run").read_text()
    ignored = (REPO / ".dockerignore").read_text()
    assert "!services/gateway/nginx.conf" in ignored and "!services/gateway/door/" in ignored
    assert "!services/gateway/door-run" in ignored


class StrictLoader(yaml.SafeLoader):
    """Refuses a key given twice in one mapping, as Compose does (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [key.value for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"]
        duplicated = {k for k in keys if keys.count(k) > 1}
        if duplicated:
            raise yaml.constructor.ConstructorError(
                None, None, f"{duplicated} twice", node.start_mark
            )
        return super().construct_mapping(node, deep=deep)


def test_compose_file_has_no_key_twice_and_agents_run_under_an_init() -> None:
    services = yaml.load((REPO / "docker-compose.yaml").read_text(), StrictLoader)["services"]
    # It reaps a forked engine whose parent died; the autoscaler's copies inherit it.
    assert services["agent"]["init"] is True


def test_the_autoscaler_runs_its_local_command_from_the_agent_image() -> None:
    services = yaml.load((REPO / "docker-compose.yaml").read_text(), StrictLoader)["services"]
    autoscaler = services["autoscaler"]
    assert autoscaler["image"] == services["agent"]["image"]
    assert autoscaler["build"] == services["agent"]["build"]
    assert autoscaler["command"] == SERVICE_COMMANDS["autoscaler"]
    # The image holds the package it runs; .dockerignore lets it into the build context.
    assert "COPY services/autoscaler/autoscaler /app/autoscaler" in _dockerfile("agent")
    assert "!services/autoscaler/autoscaler/" in (REPO / ".dockerignore").read_text()


def _pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9_.-]+)==(\S+)", path.read_text(), flags=re.M))


# What each image must have, and must not: only what it runs.
NEEDS = {
    "server": ({"prefect", "asyncpg", "sqlalchemy"}, {"pandas", "scikit-learn", "mlflow-skinny"}),
    "api": ({"prefect-client", "fastapi", "psycopg2-binary"}, {"prefect", "sqlalchemy", "pandas"}),
    "trainer": (
        {"prefect", "pandas", "pyarrow", "scikit-learn", "mlflow-skinny"},
        {"psycopg2-binary"},
    ),
    "agent": ({"prefect", "pandas", "scikit-learn", "docker", "prometheus-client"}, set()),
    "serving": ({"scikit-learn", "mlflow-skinny", "orjson"}, {"prefect", "pyarrow"}),
}


@pytest.mark.parametrize("service", sorted(NEEDS))
def test_each_image_lock_pins_what_the_stack_pins_and_only_what_it_needs(service: str) -> None:
    stack = _pins(REPO / "requirements.lock")
    own = _pins(REPO / "services" / service / "requirements.lock")
    # prefect-client is Prefect's client-only distribution, at Prefect's version.
    stack["prefect-client"] = stack["prefect"]
    assert {name: version for name, version in own.items() if stack.get(name) != version} == {}
    needs, excluded = NEEDS[service]
    assert needs <= set(own) and not excluded & set(own)
