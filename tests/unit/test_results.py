"""The flows' result tables: the rows Prefect stores (the wire format GET /runs/{id} reads),
and the models read back from them unchanged."""

import json

import pytest

from common.results import TABLES, LiveMetrics, ModelMetrics, ModelRegistry, kind_of

TRAINED = ModelMetrics(
    train_rmse=9.5, val_rmse=10.25, train_rows=1000, val_rows=900, features=520,
    train_month="2021-01 (synthetic)", val_month="2021-02 (tlc)",
    model="/models/fhv/2021-01_2021-02/run.joblib",
)  # fmt: skip
REGISTERED = ModelRegistry(
    model="trip-duration-fhv", version="2", alias="challenger", val_month="2021-02",
    val_rmse=10.25, champion_version="1", champion_rmse=10.0,
    mlflow_run="http://mlflow/#/experiments/1/runs/r", model_version="http://mlflow/#/models/v2",
    decision="version 2 does not beat champion version 1: it becomes challenger",
)  # fmt: skip
LIVE = LiveMetrics(
    requests=100, trips=400, errors=0, live_rmse=12.5, latency_p50_ms=3.0, latency_p99_ms=9.0,
    model="trip-duration-fhv", version="2", first_error=None, month="2017-12",
    retrain="3f0c", validation_rmse=10.25, mlflow_run="http://mlflow/#/experiments/1/runs/l",
)  # fmt: skip


def test_a_metric_table_is_a_row_per_field_in_order() -> None:
    assert TRAINED.rows()[:2] == [
        {"metric": "train_rmse", "value": 9.5},
        {"metric": "val_rmse", "value": 10.25},
    ]
    assert [row["metric"] for row in TRAINED.rows()] == list(ModelMetrics.model_fields)
    assert TRAINED.metrics() == {k: v for k, v in TRAINED.table().items() if k != "model"}


def test_a_row_table_is_one_row_of_its_fields() -> None:
    [row] = REGISTERED.rows()
    assert list(row) == [
        "model", "version", "alias", "val_month", "val_rmse", "champion_version",
        "champion_rmse", "mlflow_run", "model_version", "decision",
    ]  # fmt: skip


def test_live_metrics_keep_the_first_error_out_of_the_table() -> None:
    failing = LIVE.model_copy(update={"first_error": "HTTP 503"})
    assert failing.values()["first_error"] == "HTTP 503"
    assert "first_error" not in failing.table()
    assert list(LIVE.table()) == [
        "requests", "trips", "errors", "live_rmse", "latency_p50_ms", "latency_p99_ms",
        "model", "version", "month", "retrain", "validation_rmse", "mlflow_run",
    ]  # fmt: skip


def test_without_mlflow_live_metrics_have_no_validation_rmse_row_but_a_retrain_row() -> None:
    alone = LIVE.model_copy(update={"validation_rmse": None, "mlflow_run": None, "retrain": None})
    table = alone.table()
    assert "validation_rmse" not in table and "mlflow_run" not in table
    assert table["retrain"] is None
    assert LiveMetrics.from_rows(alone.rows()) == alone


@pytest.mark.parametrize("table", [TRAINED, REGISTERED, LIVE], ids=lambda t: t.kind)
def test_a_table_read_back_from_its_stored_rows_is_the_same(table) -> None:
    stored = json.loads(json.dumps(table.rows()))  # as Prefect keeps it
    assert type(table).from_rows(stored) == table
    assert type(table).read({table.kind: stored}) == table
    assert type(table).read({}) is None


def test_a_registry_row_from_before_decisions_reads() -> None:
    [row] = REGISTERED.rows()
    del row["decision"]
    assert ModelRegistry.from_rows([row]).decision is None


def test_keys_are_the_dataset_and_the_kind() -> None:
    assert [t.key("fhv") for t in TABLES] == [
        "fhv-model-metrics", "fhv-model-registry", "fhv-live-metrics"
    ]  # fmt: skip
    assert kind_of("green-live-metrics") == "live-metrics"
    assert kind_of("fhv-model-metrics") == "model-metrics"
    assert kind_of("fhv-something-else") is None


@pytest.mark.parametrize("table", [TRAINED, REGISTERED, LIVE], ids=lambda t: t.kind)
def test_a_table_that_breaks_its_model_reads_as_absent_with_a_warning(table, caplog) -> None:
    stored = table.rows()
    del stored[0][next(iter(stored[0]))]  # a row without its first field
    assert type(table).read({table.kind: stored}) is None
    assert f"the {table.kind} table does not hold to its model" in caplog.text
