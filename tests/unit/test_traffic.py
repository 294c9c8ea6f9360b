"""send-requests' logic: pacing, errors, live RMSE, drift and the retraining it calls for."""

import dataclasses
import datetime as dt
import logging

import httpx
import numpy as np
import pandas as pd
import pytest

from trainer.settings import TrainerSettings
from trainer.traffic import (
    Retraining,
    TrafficReport,
    as_request,
    drift_retraining,
    drifted,
    replay,
    require_answers,
    retrain_date,
    sample,
    serving_client,
)

TRIPS = pd.DataFrame(
    {"PUlocationID": [-1, 5, 7, 9, 11], "DOlocationID": [3, -1, 8, 10, 12],
     "duration": [10.0, 12.0, 14.0, 16.0, 18.0]}
)  # fmt: skip


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_request_carries_null_for_a_missing_zone() -> None:
    body = as_request(TRIPS.head(2), "fhv")
    assert body["trips"] == [
        {"pickup_location_id": None, "dropoff_location_id": 3},
        {"pickup_location_id": 5, "dropoff_location_id": None},
    ]


def test_replay_paces_counts_errors_and_scores_what_was_answered() -> None:
    clock = FakeClock()
    calls = []

    def post(body: dict) -> httpx.Response:
        calls.append(len(body["trips"]))
        clock.now += 0.01  # 10 ms per request
        if len(calls) == 2:
            return httpx.Response(503, json={"detail": "no champion"})
        minutes = [11.0] * len(body["trips"])  # always 1 minute off the first trip's truth
        return httpx.Response(200, json={"model": "m", "version": "3", "minutes": minutes})

    report = replay(
        post, TRIPS, "fhv", rate=4, batch=2, logger=logging.getLogger("t"),
        clock=clock, sleep=clock.sleep,
    )  # fmt: skip
    assert calls == [2, 2, 1] and report.requests == 3 and report.errors == 1
    assert "HTTP 503" in report.first_error
    # Requests 0.25 s apart: the sleeps fill what the requests did not take.
    assert clock.sleeps == pytest.approx([0.24, 0.24])
    answered = np.array([10.0, 12.0, 18.0])
    assert report.live_rmse == pytest.approx(float(np.sqrt(np.mean((11.0 - answered) ** 2))))
    assert report.latency_p50_ms == pytest.approx(10.0)
    assert (report.model, report.version) == ("m", "3")


def test_a_replay_that_nobody_answers_has_no_rmse() -> None:
    def refused(body: dict) -> httpx.Response:
        raise httpx.ConnectError("refused")

    report = replay(refused, TRIPS, "fhv", rate=1000, batch=5, logger=logging.getLogger("t"))
    assert (report.errors, report.live_rmse, report.version) == (1, None, None)


def test_drift_and_the_date_that_validates_on_the_month() -> None:
    assert drifted(11.1, 10.0, 0.10) and not drifted(11.0, 10.0, 0.10)
    assert retrain_date("2021-12") == dt.date(2022, 1, 1)
    assert sample(TRIPS, 3).equals(sample(TRIPS, 3)) and len(sample(TRIPS, 10)) == 5


REPORT = TrafficReport(
    requests=100, trips=400, errors=1, live_rmse=12.5, latency_p50_ms=3.0, latency_p99_ms=9.0,
    model="trip-duration-fhv", version="4", first_error="HTTP 503: no champion",
)  # fmt: skip


def test_drift_calls_for_a_train_model_run_that_validates_on_the_month() -> None:
    retraining = drift_retraining(
        REPORT, 10.0, 0.10, month="2017-12", dataset="fhv", source="synthetic"
    )
    assert retraining == Retraining(
        parameters={"date": "2018-01-01", "dataset": "fhv", "auto_load": True,
                    "source": "synthetic"},
        tags=["drift", "drift-of:trip-duration-fhv@4"],
        reason="drift: live RMSE 12.5000 exceeds version 4's validation RMSE 10.0000 by more "
        "than 10%; starting train-model for 2018-01-01 (validates on 2017-12)",
    )  # fmt: skip


def test_no_drift_no_retraining() -> None:
    within = dataclasses.replace(REPORT, live_rmse=11.0)
    assert (
        drift_retraining(within, 10.0, 0.10, month="2017-12", dataset="fhv", source="tlc") is None
    )
    unanswered = dataclasses.replace(REPORT, live_rmse=None)
    assert (
        drift_retraining(unanswered, 1.0, 0.1, month="2017-12", dataset="fhv", source="tlc") is None
    )


def test_a_replay_nobody_answered_is_refused_with_its_first_error() -> None:
    require_answers(REPORT, "http://serving")
    with pytest.raises(
        RuntimeError, match=r"answered none of 100 requests \(first error: HTTP 503"
    ):
        require_answers(dataclasses.replace(REPORT, live_rmse=None), "http://serving")


def test_the_numbers_of_a_report_are_its_measures() -> None:
    assert REPORT.numbers() == {
        "requests": 100, "trips": 400, "errors": 1, "live_rmse": 12.5,
        "latency_p50_ms": 3.0, "latency_p99_ms": 9.0,
    }  # fmt: skip
    assert "latency_p50_ms" not in dataclasses.replace(REPORT, latency_p50_ms=None).numbers()


def test_the_serving_client_carries_the_key_when_there_is_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Neither the environment's key nor a developer's .env (`make env` writes API_KEY).
    monkeypatch.delenv("API_KEY", raising=False)
    keyed = TrainerSettings(serving_url="http://serving:8001", api_key="k" * 40)
    with serving_client(keyed) as client:
        assert client.headers["Authorization"] == f"Bearer {'k' * 40}"
        assert str(client.base_url) == "http://serving:8001"
    keyless = TrainerSettings(serving_url="http://serving:8001", _env_file=None)
    with serving_client(keyless) as client:
        assert "Authorization" not in client.headers
