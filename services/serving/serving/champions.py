"""Which model answers for each dataset: the registry's `champion`, followed as it moves.

Plain logic: how a version is found and loaded is injected, so the swap rules are tested
without MLflow. A new version is loaded and given a warm-up prediction first, then swapped
in with one assignment, so a request sees the old model or the new one, never neither. A
version that fails to load (or to predict) is logged and kept out; the old model stays.
"""

import dataclasses
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import pandas as pd

logger = logging.getLogger("serving.champions")


class Model(Protocol):
    feature_names_in_: Any

    def predict(self, X: pd.DataFrame) -> Any: ...


@dataclasses.dataclass(frozen=True)
class LookupTables:
    """A one-hot linear model as what it is: one weight per seen value of each column.

    A prediction is the intercept plus, per column, the weight of the trip's value (0 for a
    value unseen in training): two binary searches per trip, no frame, no sparse matrix.
    """

    intercept: float
    categories: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]

    def predict(self, ids: np.ndarray) -> np.ndarray:
        total = np.full(len(ids), self.intercept)
        for column, (categories, weights) in enumerate(
            zip(self.categories, self.weights, strict=True)
        ):
            values = ids[:, column]
            position = np.searchsorted(categories, values).clip(max=len(categories) - 1)
            total += np.where(categories[position] == values, weights[position], 0.0)
        return total


def lookup_tables(model: Any) -> LookupTables | None:
    """The tables of a pipeline that ends in a one-hot encoder (`categories_`) and a linear
    regressor (`coef_`, `intercept_`), such as train-model's; None for any other model.

    train-model's pipelines have two shapes: encoder and regressor (registered before the
    missing-ID fill moved into the model), or a filler first, which leaves the integer ids
    serving passes (-1: missing) as they are. Serving checks the tables against the model
    itself on every zone (`_checked`), so a first step that changed ids would show there.
    """
    steps = list(getattr(model, "named_steps", {}).values())
    if len(steps) not in (2, 3):
        return None
    encoder, regressor = steps[-2:]
    categories = getattr(encoder, "categories_", None)
    coef = getattr(regressor, "coef_", None)
    if categories is None or coef is None or not hasattr(regressor, "intercept_"):
        return None
    coef = np.asarray(coef, dtype=np.float64).ravel()
    if coef.shape != (sum(len(c) for c in categories),):
        return None
    bounds = np.cumsum([0, *(len(c) for c in categories)])
    return LookupTables(
        intercept=float(regressor.intercept_),
        categories=tuple(np.asarray(c) for c in categories),
        weights=tuple(coef[start:end] for start, end in itertools.pairwise(bounds)),
    )


@dataclasses.dataclass(frozen=True)
class Loaded:
    dataset: str
    name: str
    version: str
    model: Model
    loaded_at: float
    features: tuple[str, ...]
    tables: LookupTables | None = None

    def predict(self, ids: np.ndarray) -> np.ndarray:
        """Minutes for an (n, features) array of zone ids (-1: missing)."""
        if self.tables is not None:
            return self.tables.predict(ids)
        return self.model.predict(pd.DataFrame(ids, columns=list(self.features)))


# Zone ids to check the tables on: every TLC zone, missing, and a few never seen.
PROBE_IDS = np.arange(-1, 300)


def _checked(
    tables: LookupTables | None, model: Model, features: tuple[str, ...], name: str, version: str
) -> LookupTables | None:
    """The tables, if they predict what the model predicts on every zone (to 1e-9); else
    None, and the model itself answers."""
    if tables is None:
        return None
    ids = np.stack([np.roll(PROBE_IDS, shift) for shift in range(len(features))], axis=1)
    expected = np.asarray(model.predict(pd.DataFrame(ids, columns=list(features))), dtype=float)
    if np.allclose(tables.predict(ids), expected, rtol=1e-9, atol=1e-9):
        return tables
    logger.warning("%s version %s: lookup tables disagree with the model; not used", name, version)
    return None


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
        tables = _checked(lookup_tables(model), model, features, name, version)
        self._loaded[dataset] = Loaded(dataset, name, version, model, time.time(), features, tables)
        self._refused.pop(name, None)
        previous = f"version {current.version}" if current else "nothing"
        logger.info("%s: now serving version %s (was %s)", name, version, previous)
        return f"{name}: version {version}"
