"""The mlflow image's command: one uvicorn worker unless told otherwise, in every place the
default is written.

uvicorn's workers (--workers above 1) accept on a socket that the parent created without a
protocol number, on which asyncio does not set TCP_NODELAY: each answer's body then waits
behind Nagle's algorithm for the client's delayed ACK, 40 ms on every call of a kept-alive
connection (MLflow's client keeps them alive). bench/registry.py measures it: a later
registration took 1.83 s with two workers, 0.94 s with one.
"""

import re
from pathlib import Path

from mlflow_server.__main__ import server_command
from mlflow_server.settings import MlflowServerSettings

REPO = Path(__file__).resolve().parents[2]
URI = "postgresql://mlflow:secret@127.0.0.1:5432/mlflow"


def _workers(command: list[str]) -> str:
    return command[command.index("--workers") + 1]


def test_the_server_runs_one_worker_by_default_and_as_many_as_set() -> None:
    default = MlflowServerSettings(mlflow_backend_store_uri=URI)
    assert default.mlflow_server_workers == 1
    assert _workers(server_command(default)) == "1"
    more = MlflowServerSettings(mlflow_backend_store_uri=URI, mlflow_server_workers=3)
    assert _workers(server_command(more)) == "3"


def test_compose_env_example_and_the_docs_give_the_same_default() -> None:
    default = str(MlflowServerSettings.model_fields["mlflow_server_workers"].default)
    compose = (REPO / "docker-compose.yaml").read_text()
    assert re.findall(r"MLFLOW_SERVER_WORKERS: \$\{MLFLOW_SERVER_WORKERS:-(\d+)\}", compose) == [
        default
    ]
    example = (REPO / ".env.example").read_text()
    assert re.findall(r"^# MLFLOW_SERVER_WORKERS=(\d+)$", example, re.M) == [default]
    settings_doc = (REPO / "docs" / "settings.md").read_text()
    assert re.findall(r"^\| `MLFLOW_SERVER_WORKERS` \| `(\d+)` \|", settings_doc, re.M) == [default]
