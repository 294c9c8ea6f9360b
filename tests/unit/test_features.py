from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from trainer import store
from trainer.datasets import DATASETS
from trainer.estimators import MissingIdFiller, fill_missing_ids
from trainer.features import FEATURES, prepare, prepare_month
from trainer.store import DataStore
from trainer.synthetic import generate_month


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


def test_a_month_prepared_in_batches_equals_the_month_prepared_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fhv = DATASETS["fhv"]
    (tmp_path / "fhv").mkdir()
    table = generate_month(fhv, "2021-06", 10_000, seed=3)
    pq.write_table(table, tmp_path / "fhv" / "fhv_tripdata_2021-06.parquet", row_group_size=3_000)
    monkeypatch.setattr(store, "BATCH_ROWS", 1_024)  # batches that cut across row groups
    data = DataStore(str(tmp_path))
    batched = prepare_month(data, fhv, "2021-06")
    whole = prepare(data.read_month(fhv, "2021-06"), fhv)
    pd.testing.assert_frame_equal(batched, whole)  # values, NaN and dtypes, bit for bit
    assert 9_000 < len(batched) < 10_000  # trips outside 1-60 minutes were dropped


def test_filled_ids_are_int32_when_they_fit_and_int64_when_not() -> None:
    assert fill_missing_ids(np.array([np.nan, 265.0])).dtype == np.int32
    assert fill_missing_ids(np.array([np.nan, 2.0**31])).tolist() == [-1, 2**31]
    assert fill_missing_ids(np.array([np.nan, 2.0**31])).dtype == np.int64
    assert fill_missing_ids(np.array([-(2.0**31), 5.9])).tolist() == [-(2**31), 5]
    assert fill_missing_ids(np.array([3, 4], dtype=np.int64)).dtype == np.int32
    assert fill_missing_ids(np.array([-(2**40)], dtype=np.int64)).dtype == np.int64
