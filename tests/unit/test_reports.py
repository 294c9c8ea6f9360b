"""What the flows report: the rows of their result tables, exactly as Prefect stored them
before the tables were typed, and train-model's return value."""

from common.results import LiveMetrics, ModelMetrics, ModelRegistry
from trainer import reports
from trainer.models import ModelBundle
from trainer.registry import Registration
from trainer.traffic import TrafficReport
from trainer.training import Metrics

BUNDLE = ModelBundle(
    model=None,  # type: ignore[arg-type]
    dataset="fhv",
    train_month="2021-01",
    val_month="2021-02",
    metrics=Metrics(train_rmse=9.12345678, val_rmse=10.87654321, train_rows=1000,
                    val_rows=900, features=520),
    data_sources={"2021-01": "synthetic", "2021-02": "tlc"},
    trained_at="2021-03-10T09:00:00Z",
    flow_run_id="run",
)  # fmt: skip
LOCATION = "/models/fhv/2021-01_2021-02/run.joblib"
REGISTRATION = Registration(
    model="trip-duration-fhv", version="2", alias="champion", val_month="2021-02",
    val_rmse=10.87654321, champion_version="1", champion_rmse=11.1234567, run_id="r",
    run_url="http://mlflow/#/experiments/1/runs/r", version_url="http://mlflow/#/models/v2",
)  # fmt: skip
REPORT = TrafficReport(
    requests=100, trips=400, errors=0, live_rmse=12.5, latency_p50_ms=3.0, latency_p99_ms=9.0,
    model="trip-duration-fhv", version="2",
)  # fmt: skip


def test_the_model_metrics_table() -> None:
    report = reports.trained(BUNDLE, LOCATION)
    assert isinstance(report.table, ModelMetrics)
    assert report.table.key(report.dataset) == "fhv-model-metrics"
    assert report.table.rows() == [
        {"metric": "train_rmse", "value": 9.123457},
        {"metric": "val_rmse", "value": 10.876543},
        {"metric": "train_rows", "value": 1000},
        {"metric": "val_rows", "value": 900},
        {"metric": "features", "value": 520},
        {"metric": "train_month", "value": "2021-01 (synthetic)"},
        {"metric": "val_month", "value": "2021-02 (tlc)"},
        {"metric": "model", "value": LOCATION},
    ]
    assert report.description == "fhv trip-duration model, trained 2021-01, validated 2021-02"


def test_the_registry_table_is_described_by_its_decision() -> None:
    report = reports.registered("fhv", REGISTRATION)
    assert isinstance(report.table, ModelRegistry)
    assert report.table.rows() == [
        {
            "model": "trip-duration-fhv",
            "version": "2",
            "alias": "champion",
            "val_month": "2021-02",
            "val_rmse": 10.876543,
            "champion_version": "1",
            "champion_rmse": 11.123457,
            "mlflow_run": REGISTRATION.run_url,
            "model_version": REGISTRATION.version_url,
            "decision": REGISTRATION.decision,
        }
    ]
    assert report.description == REGISTRATION.decision
    first = reports.registered(
        "fhv", Registration(**{**REGISTRATION.__dict__, "champion_version": None,
                               "champion_rmse": None})
    )  # fmt: skip
    assert first.table.champion_rmse is None


def test_the_live_metrics_table_with_mlflow_and_a_retrain() -> None:
    report = reports.sent(
        "fhv", "2017-12", REPORT, validation_rmse=10.0, mlflow_run="http://m/r", retrain="abc"
    )
    assert isinstance(report.table, LiveMetrics)
    assert report.table.rows() == [
        {"metric": "requests", "value": 100},
        {"metric": "trips", "value": 400},
        {"metric": "errors", "value": 0},
        {"metric": "live_rmse", "value": 12.5},
        {"metric": "latency_p50_ms", "value": 3.0},
        {"metric": "latency_p99_ms", "value": 9.0},
        {"metric": "model", "value": "trip-duration-fhv"},
        {"metric": "version", "value": "2"},
        {"metric": "month", "value": "2017-12"},
        {"metric": "retrain", "value": "abc"},
        {"metric": "validation_rmse", "value": 10.0},
        {"metric": "mlflow_run", "value": "http://m/r"},
    ]
    assert report.description == "fhv 2017-12: 400 trips sent to trip-duration-fhv version 2"


def test_send_requests_returns_its_table_with_the_first_error() -> None:
    report = reports.sent("fhv", "2017-12", REPORT)
    assert report.table.values() == {
        **REPORT.__dict__, "month": "2017-12", "retrain": None
    }  # fmt: skip
    assert "first_error" not in report.table.table()


def test_train_model_returns_unrounded_metrics_and_its_registration() -> None:
    assert reports.training_result(BUNDLE, LOCATION, REGISTRATION) == {
        **BUNDLE.metrics.__dict__,
        "train_month": "2021-01",
        "val_month": "2021-02",
        "data_sources": BUNDLE.data_sources,
        "model": LOCATION,
        "registry": REGISTRATION.__dict__,
    }
    assert reports.training_result(BUNDLE, LOCATION, None)["registry"] is None
