import numpy as np
import pandas as pd

from trainer.datasets import DATASETS
from trainer.features import prepare


def _trips(minutes: list[float], pu: list[float], do: list[float]) -> pd.DataFrame:
    start = pd.Timestamp("2021-06-01 08:00")
    return pd.DataFrame(
        {
            "pickup_datetime": [start] * len(minutes),
            "dropOff_datetime": [start + pd.Timedelta(minutes=m) for m in minutes],
            "PUlocationID": pu,
            "DOlocationID": do,
        }
    )


def test_keeps_one_to_sixty_minutes_inclusive_and_ids_as_the_file_holds_them() -> None:
    trips = _trips([0.5, 1.0, 30.0, 60.0, 60.5], [np.nan, 4.0, np.nan, 7.0, 8.0], [1.0] * 5)
    prepared = prepare(trips, DATASETS["fhv"])
    assert prepared.duration.tolist() == [1.0, 30.0, 60.0]
    # Missing stays NaN: the model fills it (its first step), so it takes the files' columns.
    np.testing.assert_array_equal(prepared.PUlocationID, [4.0, np.nan, 7.0])
    assert prepared.PUlocationID.dtype == np.float64


def test_green_columns_map_to_the_same_features() -> None:
    trips = _trips([10.0], [5.0], [6.0]).rename(
        columns={
            "pickup_datetime": "lpep_pickup_datetime",
            "dropOff_datetime": "lpep_dropoff_datetime",
            "PUlocationID": "PULocationID",
            "DOlocationID": "DOLocationID",
        }
    )
    prepared = prepare(trips, DATASETS["green"])
    assert list(prepared.columns) == ["PUlocationID", "DOlocationID", "duration"]
    assert prepared.iloc[0].tolist() == [5, 6, 10.0]
