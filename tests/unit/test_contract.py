"""The names services agree on (common.contract) are the ones the compose files, the
Kubernetes manifests and `.env.example` use, and the ones the services define: a name
changed in one place and not the other fails here, not in a stack that never runs a flow.

The files are parsed (YAML, `.env` lines), not searched for substrings.
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import contract

REPO = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO / "services"
COMPOSE_FILES = sorted(REPO.glob("docker-compose*.yaml"))
MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))
# `${NAME:-default}` in a compose file.
DEFAULTED = re.compile(r"^\$\{(\w+):-(.*)\}$")
# The variables whose values are contract names, and the name each must be.
AGREED = {
    "WORK_POOL_NAME": contract.DEFAULT_WORK_POOL,
    "DEPLOYMENT_NAME": contract.DEFAULT_DEPLOYMENT,
}


class ComposeLoader(yaml.SafeLoader):
    """YAML as Compose reads it: `<<: *anchor` merged, and its `!reset` and `!override` tags
    (how an override file replaces a value) taken as the value they carry."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, _tagged)


def _compose(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), ComposeLoader)


def _compose_environments(path: Path) -> dict[str, dict[str, Any]]:
    return {
        name: service.get("environment") or {}
        for name, service in (_compose(path).get("services") or {}).items()
        if isinstance(service.get("environment"), dict)
    }


def _manifest_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in MANIFESTS:
        for document in yaml.safe_load_all(path.read_text()):
            if document and document.get("kind") == "Deployment":
                for container in document["spec"]["template"]["spec"]["containers"]:
                    found.append((f"{path.name}:{container['name']}", container))
    return found


def _env_example() -> dict[str, str]:
    """`.env.example`'s variables (each commented out: `# NAME=value   # why`)."""
    values = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.match(r"^#\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match:
            values[match[1]] = match[2]
    return values


def _is_program(module: str) -> bool:
    """A module of a service (or common) that `python -m` can run."""
    top, *rest = module.split(".")
    for package in SERVICES_DIR.glob(f"*/{top}/__init__.py"):
        path = package.parent.joinpath(*rest)
        if (path / "__main__.py").is_file():
            return True
        if path.with_suffix(".py").is_file():
            return 'if __name__ == "__main__":' in path.with_suffix(".py").read_text()
    return False


# -- What the services define is what the contract says ---------------------------------


def test_the_flows_are_the_contracts_flows() -> None:
    from trainer import flows

    defined = {obj.name for obj in vars(flows).values() if type(obj).__name__ == "Flow"}
    assert defined == set(contract.FLOWS)


def test_the_deployments_run_the_contracts_job_command_and_environment() -> None:
    from trainer.register import JOB_VARIABLES

    assert JOB_VARIABLES == {"command": contract.JOB_COMMAND, "env": contract.RUN_ENVIRONMENT}


def test_the_modules_the_contract_names_exist() -> None:
    program = contract.JOB_COMMAND.removeprefix("python -m ")
    assert program != contract.JOB_COMMAND and _is_program(program), contract.JOB_COMMAND
    for module in contract.RUN_MODULES:
        top, *rest = module.split(".")
        assert (SERVICES_DIR / top / top).joinpath(*rest).with_suffix(".py").is_file(), module


def test_model_names_follow_the_pattern() -> None:
    assert contract.model_name("fhv") == "trip-duration-fhv"
    assert contract.ALIASES == ("champion", "challenger")


# -- Compose files ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_defaults_are_the_contracts(path: Path) -> None:
    checked = 0
    for service, environment in _compose_environments(path).items():
        for name, expected in AGREED.items():
            value = environment.get(name)
            if value is None:
                continue
            match = DEFAULTED.match(str(value))
            assert match and match[1] == name, f"{path.name}: {service}: {name}={value}"
            assert match[2] == expected, f"{path.name}: {service}: {name} defaults to {match[2]}"
            checked += 1
    if path.name == "docker-compose.yaml":
        assert checked, "no service of docker-compose.yaml names the work pool: the test is stale"


def _commands(path: Path) -> list[tuple[str, list[str]]]:
    services = _compose(path).get("services") or {}
    return [
        (name, service["command"])
        for name, service in services.items()
        if isinstance(service.get("command"), list)
    ]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_commands_run_programs_the_services_have(path: Path) -> None:
    for service, command in _commands(path):
        if command[:2] == ["python", "-m"]:
            assert _is_program(command[2]), f"{path.name}: {service}: {command}"


# -- Kubernetes manifests ---------------------------------------------------------------------


def test_manifests_use_the_contracts_names_and_programs() -> None:
    containers = _manifest_containers()
    assert containers, "no Deployment in deploy/kubernetes: the test is stale"
    for where, container in containers:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        for name, expected in AGREED.items():
            if name in env:
                assert env[name] == expected, f"{where}: {name}={env[name]}"
        command = container.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert _is_program(command[2]), f"{where}: {command}"
    agents = [env for where, env in containers if where.endswith(":agent")]
    assert agents, "agents.yaml has no agent container"


# -- .env.example -----------------------------------------------------------------------------


def test_env_example_shows_the_contracts_defaults() -> None:
    values = _env_example()
    for name, expected in AGREED.items():
        assert values[name] == expected, f".env.example: {name}={values[name]}"
    assert set(values["API_FLOWS"].split(",")) == set(contract.FLOWS)
