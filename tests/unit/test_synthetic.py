import pyarrow as pa
import pytest

from trainer.datasets import DATASETS, validate_schema
from trainer.features import prepare
from trainer.synthetic import generate_month
from trainer.training import fit_and_evaluate


def test_same_arguments_give_the_same_month() -> None:
    first = generate_month(DATASETS["fhv"], "2021-06", 20_000, seed=1)
    again = generate_month(DATASETS["fhv"], "2021-06", 20_000, seed=1)
    assert first.equals(again)
    assert not first.equals(generate_month(DATASETS["fhv"], "2021-07", 20_000, seed=1))
    assert not first.equals(generate_month(DATASETS["fhv"], "2021-06", 20_000, seed=2))


def test_fhv_month_looks_like_the_real_files() -> None:
    table = generate_month(DATASETS["fhv"], "2021-02", 200_000, seed=3)
    assert table.schema.field("PUlocationID").type == pa.float64()
    assert pa.types.is_timestamp(table.schema.field("dropOff_datetime").type)
    trips = table.to_pandas()
    assert 0.81 < trips.PUlocationID.isna().mean() < 0.85
    ids = trips.DOlocationID.dropna()
    assert ids.min() >= 1 and ids.max() <= 265
    minutes = (trips.dropOff_datetime - trips.pickup_datetime).dt.total_seconds() / 60
    outside = ((minutes < 1) | (minutes > 60)).mean()
    assert 0.03 < outside < 0.06
    assert trips.pickup_datetime.dt.month.unique().tolist() == [2]


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_passes_its_own_schema_check(name: str) -> None:
    dataset = DATASETS[name]
    table = generate_month(dataset, "2021-06", 5_000, seed=1)
    validate_schema(table.schema, dataset, where="synthetic")
    assert len(prepare(table.to_pandas(), dataset)) > 4_500


def test_a_drifted_month_is_slower_by_drop_off_zone_and_hurts_an_old_model() -> None:
    fhv = DATASETS["fhv"]
    before = prepare(generate_month(fhv, "2021-05", 50_000, seed=4).to_pandas(), fhv)
    plain = prepare(generate_month(fhv, "2021-06", 50_000, seed=4).to_pandas(), fhv)
    drifted = prepare(generate_month(fhv, "2021-06", 50_000, seed=4, drift=0.5).to_pandas(), fhv)
    assert generate_month(fhv, "2021-06", 1_000, seed=4, drift=0.0).equals(
        generate_month(fhv, "2021-06", 1_000, seed=4)
    )
    # Trips that stay within 1-60 minutes are longer on average, by zone.
    assert drifted.duration.mean() > 1.2 * plain.duration.mean()
    _, on_plain = fit_and_evaluate(before, plain)
    _, on_drifted = fit_and_evaluate(before, drifted)
    assert on_drifted.val_rmse > 1.5 * on_plain.val_rmse
