"""The result tables of the flows, typed once: train-model and send-requests write them to
Prefect as table artifacts keyed `<dataset>-<kind>`, and the API reads them back for
GET /runs/{id} with these same models. The wire format is the tables' rows: a metric table
is rows of `{"metric": name, "value": value}` in field order, a row table is one row of the
model's fields."""

import logging
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)

Row = dict[str, Any]


class ResultTable(BaseModel):
    """One table artifact of a flow run."""

    model_config = ConfigDict(frozen=True)

    kind: ClassVar[str]  # the end of the artifact's key, after the dataset

    @classmethod
    def key(cls, dataset: str) -> str:
        return f"{dataset}-{cls.kind}"

    def rows(self) -> list[Row]:
        raise NotImplementedError

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Self:
        raise NotImplementedError

    @classmethod
    def read(cls, tables: Mapping[str, list[Row]]) -> Self | None:
        """This table among a run's tables (by kind), if the run wrote it. A table that does
        not hold to the model (written by another version of the flows, or edited) reads as
        absent, with a warning: a run's report then lacks it rather than failing."""
        rows = tables.get(cls.kind)
        if not rows:
            return None
        try:
            return cls.from_rows(rows)
        except (ValidationError, KeyError, TypeError, ValueError) as error:
            logger.warning("the %s table does not hold to its model: %s", cls.kind, error)
            return None


class MetricTable(ResultTable):
    """Rows of `metric` and `value`, one per field. A field named in `omitted_when_none` has
    no row when it is None (the flow did not measure it); the others always have one."""

    omitted_when_none: ClassVar[frozenset[str]] = frozenset()
    not_in_table: ClassVar[frozenset[str]] = frozenset()

    def values(self) -> Row:
        """The fields by name, in order, as the flow returns them."""
        return {
            name: value
            for name, value in self.model_dump().items()
            if not (value is None and name in self.omitted_when_none)
        }

    def table(self) -> Row:
        """The metrics by name, as the table's rows hold them."""
        return {k: v for k, v in self.values().items() if k not in self.not_in_table}

    def rows(self) -> list[Row]:
        return [{"metric": name, "value": value} for name, value in self.table().items()]

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Self:
        return cls.model_validate({row["metric"]: row["value"] for row in rows})


class RowTable(ResultTable):
    """One row: the model's fields."""

    def rows(self) -> list[Row]:
        return [self.model_dump()]

    @classmethod
    def from_rows(cls, rows: list[Row]) -> Self:
        [row] = rows
        return cls.model_validate(row)


class ModelMetrics(MetricTable):
    """train-model's metrics of the model it saved (RMSEs rounded to 6 decimals)."""

    kind = "model-metrics"

    train_rmse: float
    val_rmse: float
    train_rows: int
    val_rows: int
    features: int
    train_month: str  # "2021-01 (synthetic)": the month and where its trips came from
    val_month: str
    model: str  # where the model file is

    def metrics(self) -> Row:
        """The metrics without the model's location (GET /runs/{id} reports it apart)."""
        return {k: v for k, v in self.table().items() if k != "model"}


class ModelRegistry(RowTable):
    """What train-model's registration did in MLflow (RMSEs rounded to 6 decimals)."""

    kind = "model-registry"

    model: str  # the registered model's name
    version: str
    alias: str
    val_month: str
    val_rmse: float
    champion_version: str | None  # the champion it was compared with, if any
    champion_rmse: float | None
    mlflow_run: str  # URLs a browser opens: the MLflow run, the model version
    model_version: str
    decision: str | None = None


class LiveMetrics(MetricTable):
    """send-requests' report of live traffic: how the served model did on a month's trips,
    compared (with MLflow) to its validation RMSE, and the retraining run drift started."""

    kind = "live-metrics"
    omitted_when_none = frozenset({"validation_rmse", "mlflow_run"})
    not_in_table = frozenset({"first_error"})

    requests: int
    trips: int
    errors: int
    live_rmse: float | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    model: str | None  # the model and version that answered most trips
    version: str | None
    first_error: str | None = None
    month: str
    retrain: str | None = None  # the train-model run started on drift
    validation_rmse: float | None = None  # with MLflow only
    mlflow_run: str | None = None


# The tables GET /runs/{id} reports.
TABLES: tuple[type[ResultTable], ...] = (ModelMetrics, ModelRegistry, LiveMetrics)


def kind_of(key: str) -> str | None:
    """The kind of a table artifact's key (`fhv-model-metrics`: `model-metrics`), if it is
    one of TABLES."""
    for table in TABLES:
        if key.endswith(f"-{table.kind}"):
            return table.kind
    return None
