"""Features of the trip-duration model: duration in minutes and the two location IDs."""

import pandas as pd

from trainer.datasets import Dataset

# Canonical model inputs, whatever the dataset calls them.
FEATURES = ["PUlocationID", "DOlocationID"]
TARGET = "duration"
MIN_MINUTES = 1.0
MAX_MINUTES = 60.0
MISSING_LOCATION = -1


def prepare(trips: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Trips of 1 to 60 minutes (inclusive), with missing location IDs as -1 (infinite or
    beyond int64 counts as missing)."""
    minutes = (trips[dataset.dropoff_time] - trips[dataset.pickup_time]).dt.total_seconds() / 60
    keep = minutes.between(MIN_MINUTES, MAX_MINUTES).to_numpy()
    return pd.DataFrame(
        {
            "PUlocationID": _location_ids(trips[dataset.pickup_location][keep]),
            "DOlocationID": _location_ids(trips[dataset.dropoff_location][keep]),
            TARGET: minutes[keep].to_numpy(),
        }
    )


def _location_ids(column: pd.Series) -> pd.Series:
    if column.dtype.kind == "f":  # infinities and IDs beyond int64 are as missing as NaN
        column = column.where(column.between(-(2.0**63), 2.0**63, inclusive="left"))
    return column.fillna(MISSING_LOCATION).astype("int64").reset_index(drop=True)
