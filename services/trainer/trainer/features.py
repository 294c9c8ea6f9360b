"""Features of the trip-duration model: duration in minutes and the two location IDs.

The IDs stay as the TLC's FHV files hold them, float64 with NaN when not reported: the
model's first step fills them (`trainer.estimators.MissingIdFiller`), so that the logged
model takes the files' own columns.
"""

import pandas as pd

from trainer.datasets import Dataset

# Canonical model inputs, whatever the dataset calls them.
FEATURES = ["PUlocationID", "DOlocationID"]
TARGET = "duration"
MIN_MINUTES = 1.0
MAX_MINUTES = 60.0


def prepare(trips: pd.DataFrame, dataset: Dataset) -> pd.DataFrame:
    """Trips of 1 to 60 minutes (inclusive), location IDs as float64 (NaN: missing)."""
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
    # float64 whatever the file's type: FHV's float64, green's int64, or a column of type
    # null (object None), so that every dataset's trips reach the model alike.
    return column.astype("float64").reset_index(drop=True)
