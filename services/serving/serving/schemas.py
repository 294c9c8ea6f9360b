"""Request and response bodies, with the examples OpenAPI shows."""

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt
from typing_extensions import TypedDict

# Strict: "132", 132.5, 132.0 and true are refused with a 422 naming the field, not coerced.
Zone = Annotated[StrictInt | None, Field(ge=1, le=10_000)]


class Trip(TypedDict, total=False):
    """One trip. A typed dict rather than a model: validating a batch of them takes half the
    time (no object per trip)."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    pickup_location_id: Annotated[
        Zone,
        Field(
            description="TLC zone of the pickup, a JSON integer (not 132.0); null if not reported."
        ),
    ]
    dropoff_location_id: Annotated[
        Zone,
        Field(
            description="TLC zone of the drop-off, a JSON integer (not 7.0); null if not reported."
        ),
    ]


class PredictRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"dataset": "fhv", "trips": [{"pickup_location_id": 132, "dropoff_location_id": 7}]}
            ]
        },
    )

    dataset: str = Field("fhv", description="Whose champion answers.")
    trips: list[Trip] = Field(min_length=1, description="One trip or a batch.")


class Prediction(BaseModel):
    model: str
    version: str
    minutes: list[float] = Field(description="Predicted duration of each trip, in order.")


class LoadedModel(BaseModel):
    dataset: str
    model: str
    version: str
    loaded_at: float


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    missing: list[str] = Field(description="The datasets without a champion loaded.")
