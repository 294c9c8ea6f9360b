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
