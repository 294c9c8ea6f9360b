"""Which model serving answers with, as the champion alias moves: pure logic, fake loaders."""

import logging

import numpy as np
import pandas as pd
import pytest

from serving.champions import Champions


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
