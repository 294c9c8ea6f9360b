"""Features of the trip-duration model: duration in minutes and the two location IDs.

The IDs stay as the TLC's FHV files hold them, float64 with NaN when not reported: the
model's first step fills them (`trainer.estimators.MissingIdFiller`), so that the logged
model takes the files' own columns.

`prepare_month` prepares a stored month batch by batch into arrays sized from the file's
footer: the month's raw columns are never held whole, only its prepared trips (24 bytes a
trip), so a month of 20 M trips reads in about 0.2 GiB more than its result.
"""

import numpy as np
import pandas as pd

from trainer.datasets import Dataset
from trainer.store import DataStore

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


def prepare_month(store: DataStore, dataset: Dataset, month: str) -> pd.DataFrame:
    """`prepare` of the stored month, read and prepared one batch at a time."""
    rows = store.month_rows(dataset, month)  # an upper bound of the trips kept
    columns = {name: np.empty(rows, dtype=np.float64) for name in (*FEATURES, TARGET)}
    kept = 0
    for batch in store.month_batches(dataset, month):
        prepared = prepare(batch.to_pandas(), dataset)
        for name, column in columns.items():
            column[kept : kept + len(prepared)] = prepared[name].to_numpy()
        kept += len(prepared)
    for column in columns.values():
        column.resize(kept, refcheck=False)  # gives back the rows dropped, without a copy
    return pd.DataFrame(columns, copy=False)
