"""Which model answers for each dataset: the registry's `champion`, followed as it moves.

Plain logic: how a version is found and loaded is injected, so the swap rules are tested
without MLflow. A new version is loaded and given a warm-up prediction first, then swapped
in with one assignment, so a request sees the old model or the new one, never neither. A
version that fails to load (or to predict) is logged and kept out; the old model stays.
"""

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import pandas as pd

logger = logging.getLogger("serving.champions")


class Model(Protocol):
    feature_names_in_: Any

    def predict(self, X: pd.DataFrame) -> Any: ...


@dataclasses.dataclass(frozen=True)
class Loaded:
    dataset: str
    name: str
    version: str
    model: Model
    loaded_at: float
    features: tuple[str, ...]


class Champions:
    """The loaded champion per dataset, refreshed by `refresh` (a poller calls it)."""

    def __init__(
        self,
        datasets: list[str],
        model_name: Callable[[str], str],
        champion_version: Callable[[str], str | None],
        load: Callable[[str, str], Model],
    ) -> None:
        self.datasets = datasets
        self._model_name = model_name
        self._champion_version = champion_version
        self._load = load
        self._loaded: dict[str, Loaded] = {}
        self._refused: dict[str, str] = {}  # model name -> the version that failed to load
        self._lock = threading.Lock()  # one refresh at a time

    def get(self, dataset: str) -> Loaded | None:
        return self._loaded.get(dataset)

    def loaded(self) -> list[Loaded]:
        return list(self._loaded.values())

    def refresh(self) -> list[str]:
        """Follow the `champion` alias of every dataset once; return what changed."""
        changes = []
        with self._lock:
            for dataset in self.datasets:
                change = self._refresh(dataset)
                if change:
                    changes.append(change)
        return changes

    def _refresh(self, dataset: str) -> str | None:
        name = self._model_name(dataset)
        version = self._champion_version(name)
        current = self._loaded.get(dataset)
        if version is None or (current and current.version == version):
            return None
        if self._refused.get(name) == version:
            return None  # already failed: not retried until the alias moves
        try:
            model = self._load(name, version)
            features = tuple(str(f) for f in model.feature_names_in_)
            warm_up = pd.DataFrame([[-1] * len(features)], columns=list(features))
            model.predict(warm_up)
        except Exception as error:  # any failure keeps the old model serving
            self._refused[name] = version
            logger.error(
                "%s version %s failed to load (%s: %s); still serving %s",
                name,
                version,
                type(error).__name__,
                error,
                f"version {current.version}" if current else "nothing",
            )
            return f"{name}: version {version} refused"
        self._loaded[dataset] = Loaded(dataset, name, version, model, time.time(), features)
        self._refused.pop(name, None)
        previous = f"version {current.version}" if current else "nothing"
        logger.info("%s: now serving version %s (was %s)", name, version, previous)
        return f"{name}: version {version}"
