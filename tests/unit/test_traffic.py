"""send-requests' logic: pacing, errors, live RMSE, drift and the retrain date."""

import datetime as dt
import logging

import httpx
import numpy as np
import pandas as pd
import pytest

from trainer.traffic import as_request, drifted, replay, retrain_date, sample

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
