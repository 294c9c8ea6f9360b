"""What the stack benchmarks share: a local stack on free ports, and percentiles."""

import statistics
from pathlib import Path

from devstack.stack import LocalStack, free_port


def start_stack(root: Path, name: str, env: dict[str, str]) -> LocalStack:
    """A whole local stack (Postgres, server, MLflow, registration, one agent, API) under
    root/name."""
    stack = LocalStack(
        root / name,
        port=free_port(),
        api_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        echo=False,
        extra_env={"SYNTHETIC_ROWS": "2000", "WORK_POOL_NAME": "training", **env},
    )
    print(f"starting the {name} stack ...", flush=True)
    try:
        stack.start()
    except BaseException:
        # Its logs go with the benchmark's temporary directory: say what they said first.
        print(stack.log_tails(), flush=True)
        stack.stop()
        raise
    return stack


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    return percentile(values, 95)


def percentile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]
