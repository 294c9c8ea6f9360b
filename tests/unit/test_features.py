import numpy as np
import pandas as pd

from trainer.datasets import DATASETS
from trainer.estimators import MissingIdFiller, fill_missing_ids
from trainer.features import FEATURES, prepare


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


def test_infinite_ids_and_ids_beyond_int64_count_as_missing() -> None:
    # Before: inf raised IntCastingNaNError, and 1e20 became -9223372036854775808.
    pu = np.array([np.inf, -np.inf, 1e20, -1e20, 2.0**63, np.nan, 265.0])
    assert fill_missing_ids(pu).tolist() == [-1, -1, -1, -1, -1, -1, 265]
    # The largest uint64 would wrap to -1 by chance, 2**63 to INT64_MIN.
    unsigned = np.array([2**64 - 1, 2**63, 7], dtype=np.uint64)
    assert fill_missing_ids(unsigned).tolist() == [-1, -1, 7]
    # What the model does with such rows, through its first step.
    trips = _trips([10.0] * len(pu), list(pu), [np.inf] + [1.0] * (len(pu) - 1))
    filled = MissingIdFiller().fit_transform(prepare(trips, DATASETS["fhv"])[FEATURES])
    assert filled[:, 0].tolist() == [-1, -1, -1, -1, -1, -1, 265]
    assert filled[:, 1].tolist() == [-1] + [1] * (len(pu) - 1)


def test_time_zone_aware_pickup_and_dropoff_give_durations_across_zones() -> None:
    trips = _trips([10.0, 20.0], [1.0, 2.0], [3.0, 4.0])
    trips["pickup_datetime"] = trips.pickup_datetime.dt.tz_localize("America/New_York")
    trips["dropOff_datetime"] = trips.dropOff_datetime.dt.tz_localize("America/New_York")
    trips["dropOff_datetime"] = trips.dropOff_datetime.dt.tz_convert("UTC")
    assert prepare(trips, DATASETS["fhv"]).duration.tolist() == [10.0, 20.0]
