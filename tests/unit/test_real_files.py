"""Quirks of the real TLC files, each through download, storage, preparation and training."""

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testkit import reference
from testkit.tlc import TlcServer
from trainer.datasets import DATASETS, Dataset, SchemaError
from trainer.estimators import fill_missing_ids
from trainer.features import FEATURES, prepare
from trainer.loading import load_month
from trainer.settings import TrainerSettings
from trainer.store import DataStore
from trainer.synthetic import generate_month
from trainer.training import fit_and_evaluate

MONTH = "2021-06"


def _publish(tlc: TlcServer, dataset: Dataset, table: pa.Table) -> Path:
    path = tlc.root / f"{dataset.name}_tripdata_{MONTH}.parquet"
    pq.write_table(table, path)
    return path


def _load_and_prepare(tmp_path: Path, tlc: TlcServer, dataset: Dataset):  # -> pd.DataFrame
    store = DataStore(str(tmp_path / "data"))
    settings = TrainerSettings(tlc_url_template=tlc.url_template)
    load_month(store, dataset, MONTH, "tlc", settings, logging.getLogger("test"))
    return prepare(store.read_month(dataset, MONTH), dataset)


def _month(dataset: Dataset, rows: int = 3_000) -> pa.Table:
    return generate_month(dataset, MONTH, rows, seed=11)


def test_microsecond_timestamps_beyond_the_nanosecond_range(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    # Real files store timestamp[us]; some carry typos such as year 3021, which a conversion
    # to nanoseconds (good only until 2262) would refuse.
    table = _month(fhv)
    pickup = table[fhv.pickup_time].to_numpy().astype("datetime64[us]")
    dropoff = table[fhv.dropoff_time].to_numpy().astype("datetime64[us]")
    pickup[0] = np.datetime64("3021-06-03T10:00:00", "us")
    dropoff[0] = pickup[0] + np.timedelta64(754_500_000, "us")  # 12.575 minutes
    for name, values in ((fhv.pickup_time, pickup), (fhv.dropoff_time, dropoff)):
        column = pa.array(values, type=pa.timestamp("us"))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    assert table.schema.field(fhv.pickup_time).type == pa.timestamp("us")
    _publish(tlc_server, fhv, table)

    prepared = _load_and_prepare(tmp_path, tlc_server, fhv)
    assert prepared.duration.iloc[0] == 12.575
    _, metrics = fit_and_evaluate(prepared, prepared)
    assert metrics.train_rows == len(prepared) > 2_500


def test_a_location_column_of_type_null_means_all_missing(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    # Some months store a column nobody filled as type null, not as float64 NaN.
    table = _month(fhv)
    index = table.schema.get_field_index(fhv.pickup_location)
    table = table.set_column(index, fhv.pickup_location, pa.nulls(len(table)))
    table = table.append_column("SR_Flag_all_null", pa.nulls(len(table)))
    _publish(tlc_server, fhv, table)

    prepared = _load_and_prepare(tmp_path, tlc_server, fhv)
    assert prepared.PUlocationID.dtype == np.float64 and prepared.PUlocationID.isna().all()
    model, metrics = fit_and_evaluate(prepared, prepared)
    drop_off_ids = prepared.DOlocationID.nunique(dropna=False)  # missing is one more
    assert metrics.features == 1 + drop_off_ids
    assert np.isfinite(model.predict(prepared[["PUlocationID", "DOlocationID"]])).all()


@pytest.mark.parametrize("dataset_name", ["fhv", "green"])
def test_trips_dated_outside_their_month_are_kept_as_the_seed_keeps_them(
    tmp_path: Path, tlc_server: TlcServer, dataset_name: str
) -> None:
    dataset = DATASETS[dataset_name]
    table = _month(dataset)
    pickup = table[dataset.pickup_time].to_numpy().astype("datetime64[us]")
    dropoff = table[dataset.dropoff_time].to_numpy().astype("datetime64[us]")
    strays = ["2008-12-31T23:50", "2021-05-31T23:59", "2021-07-01T00:00", "2029-01-01T08:00"]
    for row, start in enumerate(strays):
        pickup[row] = np.datetime64(start, "us")
        dropoff[row] = pickup[row] + np.timedelta64(10, "m")
    for name, values in ((dataset.pickup_time, pickup), (dataset.dropoff_time, dropoff)):
        column = pa.array(values, type=pa.timestamp("us"))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    path = _publish(tlc_server, dataset, table)

    prepared = _load_and_prepare(tmp_path, tlc_server, dataset)
    assert prepared.duration.iloc[: len(strays)].tolist() == [10.0] * len(strays)
    if dataset_name == "fhv":  # the seed's reference reads FHV columns only
        assert len(prepared) == len(reference.read_dataframe(str(path)))


def test_infinite_and_huge_location_ids_are_missing_ones(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    # Before: inf raised IntCastingNaNError, and 1e20 became -9223372036854775808.
    table = _month(fhv)
    index = table.schema.get_field_index(fhv.dropoff_location)
    ids = table[fhv.dropoff_location].to_numpy(zero_copy_only=False).copy()
    missing = ids.copy()
    ids[:3], missing[:3] = [np.inf, -np.inf, 1e20], np.nan
    _publish(tlc_server, fhv, table.set_column(index, fhv.dropoff_location, pa.array(ids)))

    prepared = _load_and_prepare(tmp_path, tlc_server, fhv)
    same = prepare(
        table.set_column(index, fhv.dropoff_location, pa.array(missing)).to_pandas(), fhv
    )
    # The model's first step (MissingIdFiller) reads them as it reads NaN.
    np.testing.assert_array_equal(
        fill_missing_ids(prepared[FEATURES].to_numpy()), fill_missing_ids(same[FEATURES].to_numpy())
    )
    _, metrics = fit_and_evaluate(prepared, prepared)
    assert metrics.train_rows == len(prepared)


def test_a_time_zone_aware_and_a_naive_timestamp_column_are_refused_by_load_data(
    tmp_path: Path, tlc_server: TlcServer, fhv: Dataset
) -> None:
    # Before: a raw TypeError in features.prepare, when train-model read the month.
    table = _month(fhv)
    index = table.schema.get_field_index(fhv.pickup_time)
    aware = table[fhv.pickup_time].cast(pa.timestamp("us", tz="UTC"))
    table = table.set_column(index, fhv.pickup_time, aware)
    _publish(tlc_server, fhv, table)
    with pytest.raises(SchemaError, match="'pickup_datetime' and 'dropOff_datetime' mix a time"):
        _load_and_prepare(tmp_path, tlc_server, fhv)

    store = DataStore(str(tmp_path / "by-hand"))  # a file put into the store by hand
    store.fs.makedirs(store.path("fhv"), exist_ok=True)
    pq.write_table(table, store.month_path(fhv, MONTH))
    with pytest.raises(SchemaError, match="mix a time-zone-aware timestamp with a naive one"):
        store.read_month(fhv, MONTH)
