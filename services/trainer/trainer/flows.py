"""The Prefect flows. Thin: each step is a plain function from the modules beside this one."""

import os
import socket
import time
from typing import Annotated

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.events import emit_event
from prefect.runtime import flow_run
from pydantic import Field

from common.contract import (
    CHAMPION,
    DRIFT_DETECTED,
    LOAD_DATA,
    MODEL_PROMOTED,
    PROBE,
    SEND_REQUESTS,
    TRAIN_MODEL,
)
from common.months import training_months
from trainer.datasets import DatasetName, get_dataset
from trainer.features import prepare, prepare_month
from trainer.loading import SourceName, load_month
from trainer.memory import check_fits, memory_limit
from trainer.months import Day, Month, parse_date, parse_month, utc_now
from trainer.settings import TrainerSettings, get_settings
from trainer.store import DataStore, Store

# scikit-learn and MLflow (2 s of imports) are imported where a run first uses them, not
# here: `trainer.register` imports this module for the flows' signatures alone. The agent's
# fork server imports them before any run forks (trainer.preload), so runs find them warm.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from trainer.models import ModelBundle
    from trainer.registry import Registration, RegistryTarget
    from trainer.traffic import Retraining
    from trainer.training import Fitted, Metrics


@flow(name=LOAD_DATA, log_prints=True)
def load_data(
    month: Month | None = None,
    dataset: DatasetName = "fhv",
    source: SourceName = "tlc",
    force: bool = False,
    drift: Annotated[float, Field(ge=0, le=3)] = 0.0,
) -> dict[str, object]:
    """Fetch one month (YYYY-MM, default last month) of TLC trips into the data store.
    `drift` (0 to 3, synthetic only) makes the month's trips slower by drop-off zone."""
    settings = get_settings()
    manifest = load_month(
        DataStore(settings.data_store_url),
        get_dataset(dataset),
        parse_month(month),
        source,
        settings,
        get_run_logger(),
        force=force,
        drift=drift,
    )
    return manifest.__dict__


@task(cache_policy=NO_CACHE)
def check_memory(dataset: DatasetName, months: tuple[str, str]) -> None:
    """Refuse, before reading, a month too big for TRAINING_MEMORY_LIMIT_MB."""
    settings = get_settings()
    data = DataStore(settings.data_store_url)
    rows = {month: data.month_rows(get_dataset(dataset), month) for month in months}
    needed = check_fits(dataset, rows, memory_limit(settings.training_memory_limit_mb))
    get_run_logger().info("estimated peak memory %d MiB (%s rows)", needed, rows)


@task(cache_policy=NO_CACHE)
def read_prepared(dataset: DatasetName, month: str):  # -> pd.DataFrame
    spec = get_dataset(dataset)
    return prepare_month(DataStore(get_settings().data_store_url), spec, month)


@task(cache_policy=NO_CACHE)
def fit(train) -> "Fitted":
    from trainer.training import fit as fit_model

    return fit_model(train)


@task(cache_policy=NO_CACHE)
def validate(fitted: "Fitted", val) -> "Metrics":
    from trainer.training import validate as validate_model

    return validate_model(fitted, val)


def load_missing(dataset: DatasetName, months: tuple[str, str], source: SourceName) -> None:
    """Load each of `months` that the data store lacks, from `source`."""
    data = DataStore(get_settings().data_store_url)
    for month in months:
        if not data.has_month(get_dataset(dataset), month):
            load_data(month=month, dataset=dataset, source=source)


def data_sources(dataset: DatasetName, months: tuple[str, str]) -> dict[str, str]:
    """Where each stored month's trips came from (`tlc` or `synthetic`)."""
    data = DataStore(get_settings().data_store_url)
    return {month: data.read_manifest(get_dataset(dataset), month).source for month in months}


@flow(name=TRAIN_MODEL)
def train_model(
    date: Day | None = None,
    dataset: DatasetName = "fhv",
    auto_load: bool = False,
    source: SourceName = "tlc",
    promote: bool = True,
) -> dict[str, object]:
    """Train on the month two before `date` (YYYY-MM-DD, default the run's scheduled day)
    and validate on the month before. With `auto_load`, missing months are loaded first
    from `source`. With `promote` false the model is registered as `challenger` and
    `champion` stays where it is (what a backfill asks by default)."""
    from trainer import reports
    from trainer.models import ModelBundle, save_model
    from trainer.registry import PromotionLockError, RegistryUnavailableError

    logger = get_run_logger()
    settings = get_settings()
    run_date = parse_date(date, default=flow_run.scheduled_start_time.date())
    months = train_month, val_month = training_months(run_date)
    logger.info(
        "date %s: training on %s %s, validating on %s", run_date, dataset, train_month, val_month
    )
    if auto_load:
        load_missing(dataset, months, source)
    check_memory(dataset, months)
    # One month in memory at a time: the training trips go before the validation ones come.
    fitted = fit(read_prepared(dataset, train_month))
    val = read_prepared(dataset, val_month)
    bundle = ModelBundle(
        model=fitted.model,
        dataset=dataset,
        train_month=train_month,
        val_month=val_month,
        metrics=validate(fitted, val),
        data_sources=data_sources(dataset, months),
        trained_at=utc_now(),
        flow_run_id=flow_run.id,
    )
    location = save_model(Store(settings.model_store_url), bundle)
    logger.info(
        "train RMSE %.4f, validation RMSE %.4f, %d features; model saved to %s",
        bundle.metrics.train_rmse, bundle.metrics.val_rmse, bundle.metrics.features, location,
    )  # fmt: skip
    reports.publish(reports.trained(bundle, location))
    try:
        registration = register_model(settings, bundle, val, promote)
    except (RegistryUnavailableError, PromotionLockError) as error:
        # The model is not lost: say where it is.
        raise type(error)(f"{error}; the model is saved at {location}") from None
    return reports.training_result(bundle, location, registration)


def _registry_target(settings: TrainerSettings) -> "RegistryTarget":
    """The registry of this run's settings, with links a browser can open (MLflow's UI and
    this run in Prefect's)."""
    from trainer.registry import RegistryTarget

    return RegistryTarget(
        tracking_uri=str(settings.mlflow_tracking_uri),
        ui_url=settings.mlflow_ui_url or str(settings.mlflow_tracking_uri),
        flow_run_url=flow_run.ui_url,
    )


@task(cache_policy=NO_CACHE)
def register_model(
    settings: TrainerSettings, bundle: "ModelBundle", val, promote: bool = True
) -> "Registration | None":
    """Log the run to MLflow, register the model and, if `promote`, make it `champion` if it
    is the best."""
    from trainer import reports
    from trainer.promotion_lock import promotion_lock
    from trainer.registry import register_and_promote

    logger = get_run_logger()
    if not settings.mlflow_tracking_uri:
        logger.warning("MLFLOW_TRACKING_URI is unset: the model is not registered")
        return None
    registration = register_and_promote(
        _registry_target(settings),
        bundle,
        val,
        serialize=lambda: promotion_lock(settings.promotion_timeout_seconds),
        promote=promote,
    )
    logger.info("%s; MLflow run %s", registration.decision, registration.run_url)
    reports.publish(reports.registered(bundle.dataset, registration))
    if registration.alias == CHAMPION:
        emit_event(
            MODEL_PROMOTED,
            resource={
                "prefect.resource.id": f"mlflow.model-version.{registration.model}."
                f"{registration.version}",
                "prefect.resource.name": f"{registration.model} version {registration.version}",
            },
            payload={
                "model": registration.model,
                "version": registration.version,
                "previous": registration.champion_version,
                "decision": registration.decision,
                "url": registration.version_url,
            },
        )
    return registration


def start_retraining(settings: TrainerSettings, retraining: "Retraining") -> str:
    """Start the train-model run that drift calls for, without waiting; its id."""
    run = run_deployment(
        f"{TRAIN_MODEL}/{settings.deployment_name}",
        parameters=retraining.parameters,
        tags=retraining.tags,
        timeout=0,
        as_subflow=False,
    )
    # run_deployment is typed for both sync and async callers; in a sync flow it runs.
    assert isinstance(run, FlowRun)
    return str(run.id)


@flow(name=SEND_REQUESTS)
def send_requests(
    month: Month | None = None,
    dataset: DatasetName = "fhv",
    rate: Annotated[float, Field(gt=0, le=1000)] = 2.0,
    limit: Annotated[int, Field(ge=1, le=1_000_000)] = 200,
    batch: Annotated[int, Field(ge=1, le=1000)] = 1,
) -> dict[str, object]:
    """Replay `limit` trips of `month` (YYYY-MM, default last month) against the served
    champion, `rate` requests per second of `batch` trips (the seed: 2 per second, one trip
    each). Reports the live RMSE and latency; retrains when the model has drifted."""
    from trainer import reports
    from trainer.registry import log_live_metrics, validation_rmse
    from trainer.traffic import drift_retraining, replay, require_answers, sample, serving_client

    logger = get_run_logger()
    settings = get_settings()
    month = parse_month(month)
    spec = get_dataset(dataset)
    trips = sample(prepare(DataStore(settings.data_store_url).read_month(spec, month), spec), limit)
    logger.info(
        "sending %d %s trips of %s to %s: %s requests/s of %d",
        len(trips), dataset, month, settings.serving_url, rate, batch,
    )  # fmt: skip
    with serving_client(settings) as client:
        report = replay(
            lambda body: client.post("/predict", json=body),
            trips, dataset, rate=rate, batch=batch, logger=logger,
        )  # fmt: skip
    require_answers(report, settings.serving_url)
    logger.info(
        "live RMSE %.4f from %s version %s; latency p50 %.1f ms, p99 %.1f ms; %d errors",
        report.live_rmse, report.model, report.version,
        report.latency_p50_ms, report.latency_p99_ms, report.errors,
    )  # fmt: skip
    validated = mlflow_run = retrain = None
    if settings.mlflow_tracking_uri and report.model and report.version:
        validated = validation_rmse(settings.mlflow_tracking_uri, report.model, report.version)
        mlflow_run = log_live_metrics(
            _registry_target(settings), dataset, month, report, validated, flow_run.id
        )
        retraining = drift_retraining(
            report, validated, settings.drift_tolerance,
            month=month, dataset=dataset, source=settings.default_data_source,
        )  # fmt: skip
        if retraining:
            logger.warning(retraining.reason)
            retrain = start_retraining(settings, retraining)
            emit_event(
                DRIFT_DETECTED,
                resource={
                    "prefect.resource.id": f"mlflow.model-version.{report.model}.{report.version}",
                    "prefect.resource.name": f"{report.model} version {report.version}",
                },
                payload={
                    "model": report.model,
                    "version": report.version,
                    "month": month,
                    "live_rmse": report.live_rmse,
                    "validation_rmse": validated,
                    "reason": retraining.reason,
                    "retrain": retrain,
                },
            )
    sent = reports.sent(
        dataset, month, report, validation_rmse=validated, mlflow_run=mlflow_run, retrain=retrain
    )
    reports.publish(sent)
    return sent.table.values()


# A probe runs nothing but a wait: it checks agents end to end, and the autoscaler's tests and
# benchmark use it as a run of known length; the API's tests read its log lines in pages while
# it writes them.
PROBE_MAX_SECONDS = 3600
PROBE_MAX_LINES = 10_000


@flow(name=PROBE)
def probe(
    seconds: Annotated[float, Field(ge=0, le=PROBE_MAX_SECONDS)] = 1.0,
    lines: Annotated[int, Field(ge=0, le=PROBE_MAX_LINES)] = 0,
) -> dict[str, object]:
    """Hold an agent for `seconds` (0 to 3600), logging `lines` lines (0 to 10,000) evenly
    over that time, then report where the run ran."""
    logger = get_run_logger()
    logger.info("probe: holding this agent for %.1f s", seconds)
    if not lines:
        time.sleep(seconds)
    for line in range(1, lines + 1):
        time.sleep(seconds / lines)
        logger.info("probe: line %d of %d", line, lines)
    return {"seconds": seconds, "host": socket.gethostname(), "pid": os.getpid()}
