"""The MLflow model registry as the champions read it: which version holds `champion`, the
model of a version, and the follower that asks it every SERVING_POLL_SECONDS.

The only MLflow calls of serving. `Champions` takes `champion_version` and `load` as plain
callables, so tests give it a registry of their own (and override `serving.deps.get_champions`).
"""

import asyncio
import logging

import anyio
import mlflow
import mlflow.sklearn
from mlflow.tracking import MlflowClient

from common.contract import CHAMPION, model_name
from serving.champions import Champions, Model
from serving.deps import ServingMetrics
from serving.settings import ServingSettings

logger = logging.getLogger("serving")


class MlflowRegistry:
    def __init__(self, tracking_uri: str) -> None:
        mlflow.set_tracking_uri(tracking_uri)  # where `models:/` URIs are loaded from
        self.client = MlflowClient(tracking_uri)

    def champion_version(self, name: str) -> str | None:
        """The version `champion` points at; None before anything is registered."""
        try:
            return self.client.get_registered_model(name).aliases.get(CHAMPION)
        except mlflow.exceptions.RestException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # nothing registered yet
            raise

    def load(self, name: str, version: str) -> Model:
        return mlflow.sklearn.load_model(f"models:/{name}/{version}")


def mlflow_champions(settings: ServingSettings) -> Champions:
    """The champions of the configured datasets, from the registry at MLFLOW_TRACKING_URI
    (nothing is read until the first `refresh`)."""
    registry = MlflowRegistry(settings.mlflow_tracking_uri)
    return Champions(settings.datasets(), model_name, registry.champion_version, registry.load)


async def follow(champions: Champions, metrics: ServingMetrics, poll_seconds: float) -> None:
    """Refresh the champions every `poll_seconds`, for ever (the lifespan cancels it)."""
    while True:
        try:
            await anyio.to_thread.run_sync(champions.refresh)
            for loaded in champions.loaded():
                metrics.version.labels(loaded.name).set(float(loaded.version))
        except Exception as error:  # MLflow away: keep serving what is loaded
            logger.warning("could not check the champions: %s", error)
        await asyncio.sleep(poll_seconds)
