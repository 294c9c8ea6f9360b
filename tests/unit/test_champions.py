"""Which model serving answers with, as the champion alias moves: pure logic, fake loaders."""

import logging

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from serving.champions import Champions, LookupTables, _checked, lookup_tables
from trainer.datasets import DATASETS
from trainer.features import FEATURES, TARGET, prepare
from trainer.synthetic import generate_month
from trainer.training import build_model, fit_and_evaluate


class ConstantModel:
    feature_names_in_ = np.array(["PUlocationID", "DOlocationID"])

    def __init__(self, minutes: float) -> None:
        self.minutes = minutes

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        assert list(X.columns) == list(self.feature_names_in_)
        return np.full(len(X), self.minutes)


class BrokenModel(ConstantModel):
    def predict(self, X: pd.DataFrame) -> np.ndarray:
        raise ValueError("cannot predict")


def _champions(alias: dict[str, str | None], models: dict[str, object], loads: list[str]):
    def load(name: str, version: str) -> object:
        loads.append(version)
        model = models[version]
        if isinstance(model, Exception):
            raise model
        return model

    return Champions(["fhv"], lambda d: f"trip-duration-{d}", lambda name: alias["v"], load)


def test_nothing_until_a_champion_then_it_follows_the_alias() -> None:
    alias: dict[str, str | None] = {"v": None}
    loads: list[str] = []
    champions = _champions(alias, {"1": ConstantModel(10), "2": ConstantModel(12)}, loads)
    assert champions.refresh() == [] and champions.get("fhv") is None
    alias["v"] = "1"
    assert champions.refresh() == ["trip-duration-fhv: version 1"]
    assert champions.get("fhv").version == "1"
    assert champions.refresh() == []  # unchanged: not loaded again
    alias["v"] = "2"
    champions.refresh()
    loaded = champions.get("fhv")
    assert (loaded.version, loaded.model.minutes) == ("2", 12)
    assert loaded.features == ("PUlocationID", "DOlocationID")
    assert loads == ["1", "2"]


@pytest.mark.parametrize("bad", [OSError("artifact missing"), BrokenModel(0)])
def test_a_version_that_fails_to_load_or_predict_is_kept_out(
    bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    alias: dict[str, str | None] = {"v": "1"}
    loads: list[str] = []
    champions = _champions(alias, {"1": ConstantModel(10), "2": bad, "3": ConstantModel(9)}, loads)
    champions.refresh()
    alias["v"] = "2"
    with caplog.at_level(logging.ERROR, logger="serving.champions"):
        assert champions.refresh() == ["trip-duration-fhv: version 2 refused"]
    assert "version 2 failed to load" in caplog.text and "still serving version 1" in caplog.text
    assert champions.get("fhv").version == "1"
    champions.refresh()  # the same bad version is not tried again at every poll
    assert loads == ["1", "2"]
    alias["v"] = "3"
    champions.refresh()
    assert champions.get("fhv").version == "3"


def _old_shape(trips: pd.DataFrame):  # -> Pipeline
    """A champion as train-model registered it before the fill moved into the model: IDs
    filled with -1 and cast to int64 beforehand, then encoder and regressor only."""
    ids = trips[FEATURES].fillna(-1).astype("int64")
    return Pipeline(build_model().steps[1:]).fit(ids, trips[TARGET])


@pytest.mark.parametrize("shape", ["filler, encoder, regressor", "encoder, regressor (old)"])
def test_lookup_tables_predict_what_the_trained_pipeline_predicts(shape: str) -> None:
    fhv = DATASETS["fhv"]
    trips = prepare(generate_month(fhv, "2021-06", 20_000, seed=5).to_pandas(), fhv)
    model = fit_and_evaluate(trips, trips)[0] if shape.startswith("filler") else _old_shape(trips)
    assert len(model.steps) == len(shape.split(", "))
    tables = lookup_tables(model)
    assert tables is not None
    # Every zone, missing (-1), and ids never seen (0, 266-999), in every combination.
    values = np.arange(-1, 1000)
    ids = np.array(np.meshgrid(values, values[::7])).reshape(2, -1).T
    expected = model.predict(pd.DataFrame(ids, columns=FEATURES))
    # The same sums in another order: equal to a few units in the last place.
    np.testing.assert_allclose(tables.predict(ids), expected, rtol=1e-12, atol=1e-12)
    assert lookup_tables(ConstantModel(3)) is None
    features = tuple(FEATURES)
    assert _checked(tables, model, features, "m", "1") is tables


def test_serving_uses_the_tables_only_when_they_agree_with_the_model() -> None:
    model = ConstantModel(10)
    features = ("PUlocationID", "DOlocationID")
    right = LookupTables(10.0, (np.array([1]), np.array([1])), (np.zeros(1), np.zeros(1)))
    wrong = LookupTables(10.0, (np.array([1]), np.array([1])), (np.ones(1), np.zeros(1)))
    assert _checked(right, model, features, "m", "1") is right
    assert _checked(wrong, model, features, "m", "1") is None
