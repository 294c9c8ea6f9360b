"""Serving processes of a test's own, and models registered for them without a flow run
(test_serving, test_generated_clients, test_api_fuzz)."""

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pandas as pd
from prefect.settings import PREFECT_API_URL, temporary_settings

from devstack.stack import LocalStack, free_port, wait_until
from integration.conftest import API_KEY
from trainer.datasets import DATASETS
from trainer.features import prepare
from trainer.models import ModelBundle
from trainer.promotion_lock import promotion_lock
from trainer.registry import Registration, RegistryTarget, register_and_promote
from trainer.synthetic import generate_month
from trainer.training import fit_and_evaluate

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@contextmanager
def serving_process(stack: LocalStack, name: str, datasets: str) -> Iterator[str]:
    """A serving process for `datasets`, polling fast, its rate limiter out of the way (the
    tests load it from several clients or a fuzzer); yields its URL."""
    port = free_port()
    stack.start_service(
        name,
        ["python", "-m", "serving"],
        env={
            "SERVING_PORT": str(port),
            "SERVING_DATASETS": datasets,
            "SERVING_POLL_SECONDS": "0.5",
            "SERVING_RATE_LIMIT_PER_SECOND": "100000",
            "SERVING_RATE_LIMIT_BURST": "100000",
        },
    )
    url = f"http://127.0.0.1:{port}"
    try:
        stack.wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, name)
        yield url
    finally:
        stack.stop_service(name)


def synthetic_month(month: str) -> pd.DataFrame:
    return prepare(
        generate_month(DATASETS["fhv"], month, 5_000, seed=3).to_pandas(), DATASETS["fhv"]
    )


def register(
    stack: LocalStack, dataset: str, train: pd.DataFrame, val: pd.DataFrame
) -> tuple[ModelBundle, Registration]:
    """A model fitted on `train`, registered as train-model does; the promotion rule decides."""
    model, metrics = fit_and_evaluate(train, val)
    bundle = ModelBundle(model, dataset, "2021-01", "2021-02", metrics, {}, "now", None)
    target = RegistryTarget(tracking_uri=stack.mlflow_url, ui_url=stack.mlflow_url)
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        registration = register_and_promote(target, bundle, val, lambda: promotion_lock(300))
    return bundle, registration


def served(serving: str) -> bool:
    """Every dataset of the serving process has a champion loaded."""
    return httpx.get(f"{serving}/readyz").status_code == 200


def serve_a_champion(stack: LocalStack, serving: str, dataset: str) -> None:
    """Register a model for `dataset` and wait until `serving` answers with a champion."""
    register(stack, dataset, synthetic_month("2021-01"), synthetic_month("2021-02"))
    wait_until(lambda: served(serving), 60, f"a champion of {dataset} served")
