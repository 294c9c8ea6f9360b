"""The promotion rule (trainer.registry) and how it is explained, and when a champion scored
ahead is used: pure logic, no MLflow."""

import dataclasses
from concurrent.futures import Future

import pandas as pd
import pytest

from trainer import registry
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    Registration,
    decide,
    model_name,
    not_compared,
)


@pytest.mark.parametrize(
    ("new", "champion", "alias"),
    [
        (7.0, None, CHAMPION),  # the first version
        (7.0, 7.5, CHAMPION),  # strictly better
        (7.5, 7.5, CHALLENGER),  # a tie keeps the champion
        (8.0, 7.5, CHALLENGER),
    ],
)
def test_decide(new: float, champion: float | None, alias: str) -> None:
    assert decide(new, champion) == alias


def _registration(alias: str, champion_version: str | None, champion_rmse: float | None):
    return Registration(
        model=model_name("fhv"),
        version="4",
        alias=alias,
        val_month="2021-07",
        val_rmse=7.46,
        champion_version=champion_version,
        champion_rmse=champion_rmse,
        run_id="r",
        run_url="u",
        version_url="v",
    )


def test_the_decision_gives_both_numbers_and_the_month() -> None:
    won = _registration(CHAMPION, "3", 7.51).decision
    assert won == (
        "version 4 (validation RMSE 7.4600 on 2021-07) beats champion version 3 "
        "(RMSE 7.5100 on the same month): it becomes champion"
    )
    lost = _registration(CHALLENGER, "3", 7.40).decision
    assert "does not beat champion version 3 (RMSE 7.4000" in lost
    assert lost.endswith("it becomes challenger")
    first = _registration(CHAMPION, None, None).decision
    assert "first version of trip-duration-fhv" in first


def test_a_version_not_compared_says_so() -> None:
    text = not_compared("4", 7.46, "2021-07", "the promotion lock was not free within 300 s")
    assert text.startswith("version 4 (validation RMSE 7.4600 on 2021-07) was not compared")
    assert "(the promotion lock was not free within 300 s)" in text
    assert f"it becomes {CHALLENGER}" in text


def test_a_version_held_back_by_promote_false_names_the_champion_that_stays() -> None:
    held = dataclasses.replace(_registration(CHALLENGER, "3", None), promote=False)
    assert held.decision == (
        "version 4 (validation RMSE 7.4600 on 2021-07) is registered with promote=false: "
        "it becomes challenger; champion stays version 3"
    )
    none_yet = dataclasses.replace(_registration(CHALLENGER, None, None), promote=False)
    assert none_yet.decision.endswith("; trip-duration-fhv has no champion")


class _Registry:
    """MlflowClient's one call _score_champion makes: the model and its aliases."""

    def __init__(self, champion: str | None) -> None:
        self.champion = champion

    def get_registered_model(self, name: str):
        aliases = {} if self.champion is None else {CHAMPION: self.champion}
        return type("RegisteredModel", (), {"aliases": aliases})()


def _done(result=None, error: Exception | None = None) -> Future:
    future: Future = Future()
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
    return future


@pytest.mark.parametrize(
    ("early", "rescored"),
    [
        (_done(("3", 6.5)), False),  # scored ahead, still the champion: taken as it is
        (_done(("2", 9.0)), True),  # another version was champion then
        (_done((None, None)), True),  # there was none then
        (_done(error=OSError("MLflow away")), True),  # the early score failed
        (None, True),
    ],
)
def test_the_champion_scored_ahead_counts_only_if_it_is_still_the_champion(
    monkeypatch: pytest.MonkeyPatch, early: Future | None, rescored: bool
) -> None:
    loaded: list[str] = []
    monkeypatch.setattr(registry.mlflow.sklearn, "load_model", loaded.append)
    monkeypatch.setattr(registry, "rmse", lambda model, val, inputs: 7.25)
    client = _Registry(champion="3")
    result = registry._score_champion(client, "m", pd.DataFrame(), early)  # type: ignore[arg-type]
    assert result == (("3", 7.25) if rescored else ("3", 6.5))
    assert loaded == (["models:/m/3"] if rescored else [])
    assert registry._score_champion(_Registry(None), "m", pd.DataFrame(), early) == (None, None)  # type: ignore[arg-type]
