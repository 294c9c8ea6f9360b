import pyarrow as pa
import pytest

from trainer.datasets import DATASETS, SchemaError, get_dataset, validate_schema


def test_missing_columns_and_bad_types_are_all_named() -> None:
    schema = pa.schema(
        [
            ("pickup_datetime", pa.string()),
            ("dropOff_datetime", pa.timestamp("us")),
            ("PUlocationID", pa.string()),
        ]
    )
    with pytest.raises(SchemaError) as error:
        validate_schema(schema, DATASETS["fhv"], where="f.parquet")
    message = str(error.value)
    assert message.startswith("f.parquet is not a usable fhv trip file")
    assert "'pickup_datetime' is string, expected a timestamp" in message
    assert "'PUlocationID' is string, expected a numeric location ID" in message
    assert "'DOlocationID' is missing" in message


def test_green_uses_its_own_column_names() -> None:
    green = get_dataset("green")
    assert green.pickup_time == "lpep_pickup_datetime"
    assert green.pickup_location == "PULocationID"


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'purple': use one of fhv, green, yellow"):
        get_dataset("purple")


def test_a_time_zone_aware_and_a_naive_timestamp_are_refused_together_not_apart() -> None:
    def schema(pickup: pa.DataType, dropoff: pa.DataType) -> pa.Schema:
        return pa.schema(
            [
                ("pickup_datetime", pickup),
                ("dropOff_datetime", dropoff),
                ("PUlocationID", pa.float64()),
                ("DOlocationID", pa.float64()),
            ]
        )

    aware, naive = pa.timestamp("us", tz="America/New_York"), pa.timestamp("us")
    with pytest.raises(SchemaError) as error:
        validate_schema(schema(aware, naive), DATASETS["fhv"], where="f.parquet")
    assert str(error.value) == (
        "f.parquet is not a usable fhv trip file: columns 'pickup_datetime' and "
        "'dropOff_datetime' mix a time-zone-aware timestamp with a naive one"
    )
    validate_schema(schema(aware, pa.timestamp("ms", tz="UTC")), DATASETS["fhv"], where="f")
    validate_schema(schema(naive, naive), DATASETS["fhv"], where="f")
