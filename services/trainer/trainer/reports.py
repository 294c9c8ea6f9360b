"""What the flows report: their result tables (`common.results`, which the API reads back),
each with the description Prefect shows beside it, and what train-model returns. Plain
functions build them; `publish` writes one as a Prefect table artifact."""

import dataclasses
from typing import Generic, TypeVar

from prefect.artifacts import create_table_artifact

from common.results import LiveMetrics, ModelMetrics, ModelRegistry, ResultTable
from trainer.models import ModelBundle
from trainer.registry import Registration
from trainer.traffic import TrafficReport

# Six decimals: what a reader compares; the saved model keeps the unrounded numbers.
RMSE_DECIMALS = 6

T = TypeVar("T", bound=ResultTable)


@dataclasses.dataclass(frozen=True)
class Report(Generic[T]):
    """One result table of a flow run on `dataset`, as Prefect shows it."""

    dataset: str
    table: T
    description: str


def publish(report: Report[T]) -> None:
    create_table_artifact(
        key=report.table.key(report.dataset),
        table=report.table.rows(),
        description=report.description,
    )


def trained(bundle: ModelBundle, location: str) -> Report[ModelMetrics]:
    """train-model's metrics of the model it saved at `location`."""
    metrics, sources = bundle.metrics, bundle.data_sources
    train_month, val_month = bundle.train_month, bundle.val_month
    return Report(
        bundle.dataset,
        ModelMetrics(
            train_rmse=round(metrics.train_rmse, RMSE_DECIMALS),
            val_rmse=round(metrics.val_rmse, RMSE_DECIMALS),
            train_rows=metrics.train_rows,
            val_rows=metrics.val_rows,
            features=metrics.features,
            train_month=f"{train_month} ({sources[train_month]})",
            val_month=f"{val_month} ({sources[val_month]})",
            model=location,
        ),
        f"{bundle.dataset} trip-duration model, trained {train_month}, validated {val_month}",
    )


def registered(dataset: str, registration: Registration) -> Report[ModelRegistry]:
    """What the registry did with train-model's model; described by its decision."""
    champion_rmse = registration.champion_rmse
    return Report(
        dataset,
        ModelRegistry(
            model=registration.model,
            version=registration.version,
            alias=registration.alias,
            val_month=registration.val_month,
            val_rmse=round(registration.val_rmse, RMSE_DECIMALS),
            champion_version=registration.champion_version,
            champion_rmse=None if champion_rmse is None else round(champion_rmse, RMSE_DECIMALS),
            mlflow_run=registration.run_url,
            model_version=registration.version_url,
            decision=registration.decision,
        ),
        registration.decision,
    )


def sent(
    dataset: str,
    month: str,
    report: TrafficReport,
    *,
    validation_rmse: float | None = None,
    mlflow_run: str | None = None,
    retrain: str | None = None,
) -> Report[LiveMetrics]:
    """send-requests' replay of `month`; with MLflow, the answering version's validation RMSE,
    the MLflow run of the live metrics and the train-model run that drift started."""
    return Report(
        dataset,
        LiveMetrics(
            **dataclasses.asdict(report),
            month=month,
            retrain=retrain,
            validation_rmse=validation_rmse,
            mlflow_run=mlflow_run,
        ),
        f"{dataset} {month}: {report.trips} trips sent to {report.model} version {report.version}",
    )


def training_result(
    bundle: ModelBundle, location: str, registration: Registration | None
) -> dict[str, object]:
    """What train-model returns: its unrounded metrics, months, sources, model and
    registration."""
    return {
        **dataclasses.asdict(bundle.metrics),
        "train_month": bundle.train_month,
        "val_month": bundle.val_month,
        "data_sources": bundle.data_sources,
        "model": location,
        "registry": dataclasses.asdict(registration) if registration else None,
    }
