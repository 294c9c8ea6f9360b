"""Replaying a month of trips against the serving service, as the seed's send-requests did,
and what the answers say about the served model (its live RMSE, and whether it drifted enough
to retrain): plain functions, no Prefect."""

import dataclasses
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable

import httpx
import numpy as np
import pandas as pd
from dateutil.relativedelta import relativedelta

from trainer.features import FEATURES, TARGET
from trainer.settings import TrainerSettings

SAMPLE_SEED = 0


@dataclasses.dataclass(frozen=True)
class TrafficReport:
    requests: int
    trips: int
    errors: int
    live_rmse: float | None  # over the trips that were answered
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    model: str | None  # the model and version that answered most trips
    version: str | None
    first_error: str | None = None

    def numbers(self) -> dict[str, float]:
        """The measures that were taken (counts, RMSE, latencies), by name."""
        return {
            name: value
            for name, value in dataclasses.asdict(self).items()
            if isinstance(value, int | float)
        }


@dataclasses.dataclass(frozen=True)
class Retraining:
    """The train-model run that drift calls for: its parameters, its tags, and why."""

    parameters: dict[str, object]
    tags: list[str]
    reason: str


def serving_client(settings: TrainerSettings) -> httpx.Client:
    """A client of the serving service, with the API key if there is one."""
    headers = (
        {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
        if settings.api_key
        else {}
    )
    return httpx.Client(
        base_url=settings.serving_url, headers=headers, timeout=settings.serving_timeout_seconds
    )


def sample(trips: pd.DataFrame, limit: int) -> pd.DataFrame:
    """`limit` trips of the month, the same ones every time (all of them if fewer)."""
    if len(trips) <= limit:
        return trips.reset_index(drop=True)
    return trips.sample(n=limit, random_state=SAMPLE_SEED).reset_index(drop=True)


def as_request(trips: pd.DataFrame, dataset: str) -> dict[str, object]:
    """The /predict body for prepared trips (missing location IDs are -1 there, null here)."""
    ids = trips[FEATURES].to_numpy()
    return {
        "dataset": dataset,
        "trips": [
            {
                "pickup_location_id": int(pu) if pu > 0 else None,
                "dropoff_location_id": int(do) if do > 0 else None,
            }
            for pu, do in ids
        ],
    }


def replay(
    post: Callable[[dict[str, object]], httpx.Response],
    trips: pd.DataFrame,
    dataset: str,
    *,
    rate: float,
    batch: int,
    logger: logging.Logger | logging.LoggerAdapter,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> TrafficReport:
    """Send `trips` in requests of `batch`, `rate` requests per second; a failed request is
    counted and the replay goes on. Progress is logged every tenth."""
    predicted = np.full(len(trips), np.nan)
    latencies: list[float] = []
    answered_by: Counter[tuple[str, str]] = Counter()
    errors, first_error = 0, None
    starts = range(0, len(trips), batch)
    began = clock()
    next_report = 0.1
    for number, start in enumerate(starts):
        wait = began + number / rate - clock()
        if wait > 0:
            sleep(wait)
        chunk = trips.iloc[start : start + batch]
        sent = clock()
        try:
            response = post(as_request(chunk, dataset))
            latencies.append((clock() - sent) * 1e3)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
            body = response.json()
            predicted[start : start + len(chunk)] = body["minutes"]
            answered_by[(body["model"], body["version"])] += len(chunk)
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError) as error:
            errors += 1
            first_error = first_error or f"{type(error).__name__}: {error}"
        done = (number + 1) / len(starts)
        if done >= next_report:
            logger.info("sent %d of %d requests (%d errors)", number + 1, len(starts), errors)
            next_report = int(done * 10) / 10 + 0.1
    answered = ~np.isnan(predicted)
    truth = trips[TARGET].to_numpy()
    (model, version), _ = answered_by.most_common(1)[0] if answered_by else ((None, None), 0)
    return TrafficReport(
        requests=len(starts),
        trips=len(trips),
        errors=errors,
        live_rmse=float(np.sqrt(np.mean((predicted[answered] - truth[answered]) ** 2)))
        if answered.any()
        else None,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p99_ms=float(np.percentile(latencies, 99)) if latencies else None,
        model=model,
        version=version,
        first_error=first_error,
    )


def require_answers(report: TrafficReport, serving_url: str) -> None:
    """Refuse a replay that no request of got an answer: there is nothing to judge."""
    if report.live_rmse is None:
        raise RuntimeError(
            f"serving at {serving_url} answered none of {report.requests} requests "
            f"(first error: {report.first_error})"
        )


def drifted(live_rmse: float, validation_rmse: float, tolerance: float) -> bool:
    """The served model does worse on live trips than on its validation month, by more than
    `tolerance` (0.1: 10%)."""
    return live_rmse > validation_rmse * (1 + tolerance)


def retrain_date(month: str) -> dt.date:
    """The train-model date that validates on `month` (and trains on the month before)."""
    first = dt.date.fromisoformat(f"{month}-01")
    return first + relativedelta(months=1)


def drift_retraining(
    report: TrafficReport,
    validation_rmse: float,
    tolerance: float,
    *,
    month: str,
    dataset: str,
    source: str,
) -> Retraining | None:
    """The retraining that the served model's drift on `month` calls for, if it drifted: a
    train-model run that validates on `month`, loading missing months from `source`."""
    if report.live_rmse is None or not drifted(report.live_rmse, validation_rmse, tolerance):
        return None
    date = retrain_date(month)
    return Retraining(
        parameters={
            "date": date.isoformat(),
            "dataset": dataset,
            "auto_load": True,
            "source": source,
        },
        tags=["drift", f"drift-of:{report.model}@{report.version}"],
        reason=f"drift: live RMSE {report.live_rmse:.4f} exceeds version {report.version}'s "
        f"validation RMSE {validation_rmse:.4f} by more than {tolerance * 100:.0f}%; "
        f"starting train-model for {date} (validates on {month})",
    )
