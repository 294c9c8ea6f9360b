"""A deterministic generator of realistic TLC months, so the stack runs fully offline.

The numbers follow the real FHV 2021 files: about 83% of pickup IDs missing, IDs 1-265,
about 4% of trips outside 1-60 minutes. Durations depend on the pickup and drop-off zones,
so a model has something to learn.
"""

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa

from trainer.datasets import Dataset
from trainer.months import month_bounds

ZONES = 265
MISSING_PICKUP_SHARE = 0.83
MISSING_DROPOFF_SHARE = 0.14
SHORT_TRIP_SHARE = 0.015  # under 1 minute
LONG_TRIP_SHARE = 0.025  # over 60 minutes


def _zone_model(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zone popularity and per-zone duration effects, fixed by the seed across months."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, ZONES + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    pickup_effect = rng.normal(0.0, 0.25, ZONES)
    dropoff_effect = rng.normal(0.0, 0.3, ZONES)
    return popularity, pickup_effect, dropoff_effect


def _month_seed(seed: int, dataset: str, month: str, part: int) -> int:
    key = f"{seed}:{dataset}:{month}" + (f":{part}" if part else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _drift_shift(seed: int) -> np.ndarray:
    """How much slower each drop-off zone gets per unit of drift, fixed by the seed."""
    return np.random.default_rng(seed + 1).uniform(0.5, 1.5, ZONES)


def generate_month(
    dataset: Dataset, month: str, rows: int, seed: int, drift: float = 0.0, part: int = 0
) -> pa.Table:
    """One month of trips in the dataset's own schema, the same for the same arguments.

    `drift` > 0 makes trips to each drop-off zone slower by a zone's own factor (about
    exp(drift) on average): a month on which a model fitted before the drift does worse.
    `part` > 0 gives other trips of the same month (same zones and effects), so that a month
    too big to generate at once can be written in parts.
    """
    popularity, pickup_effect, dropoff_effect = _zone_model(seed)
    rng = np.random.default_rng(_month_seed(seed, dataset.name, month, part))

    start, end = month_bounds(month)
    span_us = int((end - start).total_seconds() * 1_000_000)
    pickup = np.datetime64(start, "us") + rng.integers(0, span_us, rows).astype("timedelta64[us]")

    pu = rng.choice(ZONES, rows, p=popularity)
    do = rng.choice(ZONES, rows, p=popularity)
    log_minutes = np.log(13.0) + pickup_effect[pu] + dropoff_effect[do] + rng.normal(0, 0.4, rows)
    log_minutes += drift * _drift_shift(seed)[do]
    minutes = np.exp(log_minutes)
    outlier = rng.random(rows)
    short = outlier < SHORT_TRIP_SHARE
    long = (outlier >= SHORT_TRIP_SHARE) & (outlier < SHORT_TRIP_SHARE + LONG_TRIP_SHARE)
    minutes[short] = rng.uniform(0.0, 0.99, short.sum())
    minutes[long] = rng.uniform(61.0, 240.0, long.sum())
    dropoff = pickup + (minutes * 60_000_000).astype("int64").astype("timedelta64[us]")

    pu_ids = (pu + 1).astype("float64")
    do_ids = (do + 1).astype("float64")
    if dataset.name == "fhv":
        # FHV files store location IDs as float64 with NaN where the base did not report one.
        pu_ids[rng.random(rows) < MISSING_PICKUP_SHARE] = np.nan
        do_ids[rng.random(rows) < MISSING_DROPOFF_SHARE] = np.nan
        bases = np.array([f"B{n:05d}" for n in rng.integers(1, 3500, 800)], dtype=object)
        frame = pd.DataFrame(
            {
                "dispatching_base_num": bases[rng.integers(0, len(bases), rows)],
                dataset.pickup_time: pickup,
                dataset.dropoff_time: dropoff,
                dataset.pickup_location: pu_ids,
                dataset.dropoff_location: do_ids,
                "SR_Flag": np.where(rng.random(rows) < 0.05, 1.0, np.nan),
                "Affiliated_base_number": bases[rng.integers(0, len(bases), rows)],
            }
        )
    else:
        # Green and yellow files store location IDs as int64 and carry a distance.
        frame = pd.DataFrame(
            {
                "VendorID": rng.integers(1, 3, rows),
                dataset.pickup_time: pickup,
                dataset.dropoff_time: dropoff,
                dataset.pickup_location: pu_ids.astype("int64"),
                dataset.dropoff_location: do_ids.astype("int64"),
                "passenger_count": rng.integers(1, 5, rows).astype("float64"),
                "trip_distance": np.round(minutes * rng.uniform(0.15, 0.4, rows), 2),
            }
        )
    return pa.Table.from_pandas(frame, preserve_index=False)
