"""`make dev` (`python -m devstack`) as a process of its own, for the fault tests and the
start-up benchmark that start it: its environment on free ports, and its banner."""

import os
from pathlib import Path

from devstack.__main__ import HEADLINE
from devstack.stack import REPO, free_port

__all__ = ["HEADLINE", "environment"]


def environment(
    state_dir: Path, *, port: int | None = None, api_port: int | None = None, **extra: str
) -> dict[str, str]:
    """This process's environment with `make dev`'s state in `state_dir`, each service on a
    free port (the Prefect server's and the API's as given, if given), and `extra`."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            str(REPO / "services" / name)
            for name in ("common", "trainer", "agent", "autoscaler", "api", "devstack")
        ),
        "STATE_DIR": str(state_dir),
        "PREFECT_SERVER_API_PORT": str(port or free_port()),
        "API_PORT": str(api_port or free_port()),
        "MLFLOW_SERVER_PORT": str(free_port()),
        "SERVING_PORT": str(free_port()),
        "AUTOSCALER_METRICS_PORT": str(free_port()),
        **extra,
    }
