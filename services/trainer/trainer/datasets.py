"""The TLC datasets the trainer understands, and schema validation of their files."""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import pyarrow as pa


class SchemaError(ValueError):
    """A trip file that lacks the columns training needs, or has unworkable types."""


@dataclass(frozen=True)
class Dataset:
    """Where one TLC dataset keeps the columns the model uses."""

    name: str
    pickup_time: str
    dropoff_time: str
    pickup_location: str
    dropoff_location: str

    @property
    def columns(self) -> list[str]:
        return [self.pickup_time, self.dropoff_time, self.pickup_location, self.dropoff_location]


DATASETS: dict[str, Dataset] = {
    "fhv": Dataset("fhv", "pickup_datetime", "dropOff_datetime", "PUlocationID", "DOlocationID"),
    "green": Dataset(
        "green", "lpep_pickup_datetime", "lpep_dropoff_datetime", "PULocationID", "DOLocationID"
    ),
    "yellow": Dataset(
        "yellow", "tpep_pickup_datetime", "tpep_dropoff_datetime", "PULocationID", "DOLocationID"
    ),
}

# The flows' `dataset` parameter: one of DATASETS, as a Literal so that its schema lists them
# (a type checker, which cannot read a Literal made at run time, sees a string).
if TYPE_CHECKING:
    DatasetName = str
else:
    DatasetName = Literal[tuple(DATASETS)]


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise ValueError(f"unknown dataset {name!r}: use one of {known}") from None


def validate_schema(schema: pa.Schema, dataset: Dataset, *, where: str) -> None:
    """Raise SchemaError naming every missing column and every unworkable type."""
    problems = []
    zones = set()
    for column in dataset.columns:
        index = schema.get_field_index(column)
        if index < 0:
            problems.append(f"column {column!r} is missing")
            continue
        kind = schema.field(index).type
        if column in (dataset.pickup_time, dataset.dropoff_time):
            if not pa.types.is_timestamp(kind):
                problems.append(f"column {column!r} is {kind}, expected a timestamp")
            else:
                zones.add(kind.tz is not None)
        elif not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)
        ):
            # Type null: real TLC months store a location column nobody filled that way.
            problems.append(f"column {column!r} is {kind}, expected a numeric location ID")
    if len(zones) == 2:
        # Which zone the naive one is in, nobody can tell: durations would be off by hours.
        problems.append(
            f"columns {dataset.pickup_time!r} and {dataset.dropoff_time!r} mix a "
            "time-zone-aware timestamp with a naive one"
        )
    if problems:
        raise SchemaError(
            f"{where} is not a usable {dataset.name} trip file: " + "; ".join(problems)
        )
