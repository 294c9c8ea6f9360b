"""The model registry on MLflow: log a training run, register its model, promote the best.

Promotion uses MLflow's aliases (stages are deprecated since MLflow 2.9): the first version
of a model becomes `champion`; a later one takes `champion` only if it beats the current
champion on the same validation month, and otherwise becomes `challenger`. A version is
never left without an alias: if the comparison fails after registration, it becomes
`challenger`, and its description says it was not compared.
"""

import dataclasses
import functools
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import mlflow
import mlflow.sklearn
import numpy
import pandas as pd
import scipy
import sklearn
from mlflow.exceptions import MlflowException, RestException
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema
from sklearn.pipeline import Pipeline

import trainer
from common.contract import CHALLENGER, CHAMPION, model_name
from trainer.estimators import (
    ExactLinearRegression,
    IntegerOneHotEncoder,
    MissingIdFiller,
    fill_missing_ids,
)
from trainer.features import FEATURES
from trainer.models import ModelBundle
from trainer.traffic import TrafficReport
from trainer.training import rmse

# The MLflow tag that links a run and a version back to the Prefect flow run that made them.
FLOW_RUN_TAG = "prefect.flow_run_id"
# Given explicitly: inferring them from the environment took 11.7 s per logged model.
PIP_REQUIREMENTS = [
    f"scikit-learn=={sklearn.__version__}",
    f"scipy=={scipy.__version__}",
    f"numpy=={numpy.__version__}",
    f"pandas=={pd.__version__}",
]
# The pipeline's own estimators live in trainer.estimators: the model carries that module (as
# package `trainer`, and nothing else of it: each file is one more upload), and skops (MLflow's
# safe format, which loads only trusted types) is told to trust them.
CODE_FILES = ("__init__.py", "estimators.py")
TRUSTED_TYPES = [
    f"{cls.__module__}.{cls.__qualname__}"
    for cls in (MissingIdFiller, IntegerOneHotEncoder, ExactLinearRegression)
]
INPUT_EXAMPLE_ROWS = 5


class RegistryUnavailableError(RuntimeError):
    """MLflow could not be reached, or refused a request, after its own retries."""


class PromotionLockError(RuntimeError):
    """The lock that serialises promotions was not acquired (see trainer.promotion_lock)."""


def decide(new_rmse: float, champion_rmse: float | None) -> str:
    """The alias a new version takes: `champion` if there is none yet or it is strictly
    better on the same validation month, else `challenger` (a tie keeps the champion)."""
    if champion_rmse is None or new_rmse < champion_rmse:
        return CHAMPION
    return CHALLENGER


@dataclasses.dataclass(frozen=True)
class Registration:
    """What the registry did with one training run's model."""

    model: str
    version: str
    alias: str
    val_month: str
    val_rmse: float
    champion_version: str | None  # the champion it was compared with, if any
    champion_rmse: float | None  # that champion re-scored on `val_month`
    run_id: str
    run_url: str
    version_url: str
    promote: bool = True  # False: a run that may not move `champion` (a backfill's)

    @property
    def decision(self) -> str:
        ours = f"version {self.version} (validation RMSE {self.val_rmse:.4f} on {self.val_month})"
        if not self.promote:
            stays = (
                f"{CHAMPION} stays version {self.champion_version}"
                if self.champion_version
                else f"{self.model} has no {CHAMPION}"
            )
            return f"{ours} is registered with promote=false: it becomes {CHALLENGER}; {stays}"
        if self.champion_version is None:
            return f"{ours} is the first version of {self.model}: it becomes {CHAMPION}"
        theirs = (
            f"{CHAMPION} version {self.champion_version} "
            f"(RMSE {self.champion_rmse:.4f} on the same month)"
        )
        if self.alias == CHAMPION:
            return f"{ours} beats {theirs}: it becomes {CHAMPION}"
        return f"{ours} does not beat {theirs}: it becomes {CHALLENGER}"


def not_compared(version: str, val_rmse: float, val_month: str, reason: str) -> str:
    """The description of a version registered but never compared with the champion."""
    return (
        f"version {version} (validation RMSE {val_rmse:.4f} on {val_month}) was not compared "
        f"with the {CHAMPION} ({reason}): it becomes {CHALLENGER}; promote it by hand, or let "
        f"a later run compare"
    )


@dataclasses.dataclass(frozen=True)
class RegistryTarget:
    """Where the registry is, and how a person reaches its UI and Prefect's."""

    tracking_uri: str
    ui_url: str
    flow_run_url: str | None = None


def register_and_promote(
    target: RegistryTarget,
    bundle: ModelBundle,
    val: pd.DataFrame,
    serialize: Callable[[], AbstractContextManager[object]],
    *,
    promote: bool = True,
) -> Registration:
    """Log the run and its model to MLflow, register a version, then decide its alias.

    `val` holds the prepared validation trips, to re-score the champion on the same month.
    `serialize` holds a lock across read-compare-set of the alias, so that two runs that end
    together never both take `champion` on a stale comparison. With `promote` false the
    version becomes `challenger` without a comparison (nor the lock): `champion` never moves.
    """
    client = MlflowClient(target.tracking_uri)
    name = model_name(bundle.dataset)
    mlflow.set_tracking_uri(target.tracking_uri)  # before the thread below reads it
    # The champion is downloaded and re-scored while the new model uploads: they share
    # nothing, and the lock is then held only to compare and set (a score of another version
    # than the champion found under the lock is not used).
    with ThreadPoolExecutor(1, thread_name_prefix="champion-score") as ahead:
        early = ahead.submit(_score_champion, client, name, val) if promote else None
        try:
            experiment_id, run_id, version = _log_and_register(client, target, bundle, val, name)
        except (MlflowException, OSError) as error:
            raise _unavailable(target, error) from error
    try:
        if promote:
            with serialize():
                champion_version, champion_rmse = _score_champion(client, name, val, early)
                alias = decide(bundle.metrics.val_rmse, champion_rmse)
                client.set_registered_model_alias(name, alias, version)
        else:
            champion = client.get_registered_model(name).aliases.get(CHAMPION)
            champion_version, champion_rmse = (str(champion) if champion else None), None
            alias = CHALLENGER
            client.set_registered_model_alias(name, alias, version)
        registration = Registration(
            model=name,
            version=version,
            alias=alias,
            val_month=bundle.val_month,
            val_rmse=bundle.metrics.val_rmse,
            champion_version=champion_version,
            champion_rmse=champion_rmse,
            run_id=run_id,
            run_url=f"{_ui(target)}/#/experiments/{experiment_id}/runs/{run_id}",
            version_url=f"{_ui(target)}/#/models/{name}/versions/{version}",
            promote=promote,
        )
        client.update_model_version(name, version, description=registration.decision)
        client.set_tag(run_id, "promotion", registration.decision)
    except Exception as error:
        # Registered, but not promoted: the version must not stay without an alias.
        fate = _leave_as_challenger(client, name, version, run_id, bundle, error)
        if isinstance(error, PromotionLockError):
            raise PromotionLockError(f"{error}; {fate}") from error
        if isinstance(error, MlflowException | OSError):
            raise _unavailable(target, error, fate) from error
        error.add_note(fate)
        raise
    return registration


def _unavailable(
    target: RegistryTarget, error: Exception, fate: str | None = None
) -> RegistryUnavailableError:
    # requests' connection errors are OSErrors; MLflow has already retried with backoff.
    message = f"MLflow at {target.tracking_uri} did not take the model ({error})"
    return RegistryUnavailableError(f"{message}; {fate}" if fate else message)


def _leave_as_challenger(
    client: MlflowClient,
    name: str,
    version: str,
    run_id: str,
    bundle: ModelBundle,
    error: Exception,
) -> str:
    """Make an uncompared version `challenger`, saying why; what became of it, in words."""
    try:
        if client.get_model_version(name, version).aliases:
            return f"version {version} of {name} keeps the alias it took"
        reason = f"{type(error).__name__}: {error}"
        description = not_compared(version, bundle.metrics.val_rmse, bundle.val_month, reason)
        client.set_registered_model_alias(name, CHALLENGER, version)
        client.update_model_version(name, version, description=description)
        client.set_tag(run_id, "promotion", description)
    except (MlflowException, OSError) as unreachable:
        return (
            f"version {version} of {name} is registered with no alias: MLflow did not take "
            f"{CHALLENGER} either ({unreachable})"
        )
    return f"version {version} of {name} is {CHALLENGER}, not compared with the {CHAMPION}"


def _ui(target: RegistryTarget) -> str:
    return target.ui_url.rstrip("/")


def _experiment_id(client: MlflowClient, name: str) -> str:
    """Get or create the experiment; a concurrent creation by another run is not an error."""
    for _ in range(2):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(name)
        except RestException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
    raise RegistryUnavailableError(f"experiment {name!r} was created and removed meanwhile")


def _log_and_register(
    client: MlflowClient, target: RegistryTarget, bundle: ModelBundle, val: pd.DataFrame, name: str
) -> tuple[str, str, str]:
    """One MLflow run with params, metrics and the model, and a new version of `name`:
    (experiment id, run id, version)."""
    metrics = bundle.metrics
    tags = {
        FLOW_RUN_TAG: bundle.flow_run_id or "",
        "prefect.flow_run_url": target.flow_run_url or "",
        "dataset": bundle.dataset,
    }
    experiment_id = _experiment_id(client, name)
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"{bundle.train_month}_{bundle.val_month}",
        tags=tags,
    ) as run:
        mlflow.log_params(
            {
                "dataset": bundle.dataset,
                "train_month": bundle.train_month,
                "val_month": bundle.val_month,
                "sources": ",".join(f"{m}={s}" for m, s in sorted(bundle.data_sources.items())),
                "train_rows": metrics.train_rows,
                "val_rows": metrics.val_rows,
                "features": metrics.features,
            }
        )
        mlflow.log_metrics({"train_rmse": metrics.train_rmse, "val_rmse": metrics.val_rmse})
        example = val[FEATURES].head(INPUT_EXAMPLE_ROWS).astype("float64")
        logged = mlflow.sklearn.log_model(
            bundle.model,
            name="model",
            signature=_signature(bundle.model, example),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            code_paths=[str(_code_package())],
            skops_trusted_types=TRUSTED_TYPES,
        )
    # Creates the registered model on first use (a concurrent creation is not an error).
    version = mlflow.register_model(logged.model_uri, name, tags=tags)
    return experiment_id, run.info.run_id, str(version.version)


def _signature(model: Pipeline, example: pd.DataFrame) -> ModelSignature:
    """The IDs as MLflow type `any`, the only one that takes both of the files' forms:
    pyfunc refuses NaN and floats for a `long` column, and int64 for a `double` one (not a
    safe conversion, it says). The model's first step takes floats (NaN: missing) or
    integers, and refuses anything that is not a number."""
    inputs = Schema([ColSpec(AnyType(), name) for name in FEATURES])
    return ModelSignature(inputs, infer_signature(example, model.predict(example)).outputs)


@functools.cache
def _code_package() -> Path:
    """A directory `trainer/` with only what unpickling the model needs, made once."""
    package = Path(tempfile.mkdtemp(prefix="model-code-")) / "trainer"
    package.mkdir()
    for name in CODE_FILES:
        shutil.copyfile(Path(trainer.__file__).parent / name, package / name)
    return package


def _score_champion(
    client: MlflowClient,
    name: str,
    val: pd.DataFrame,
    early: Future[tuple[str | None, float | None]] | None = None,
) -> tuple[str | None, float | None]:
    """The current champion and its RMSE on these validation trips; (None, None) if none.
    `early`, a score made before (or its failure), is taken if it is of the same version."""
    champion = client.get_registered_model(name).aliases.get(CHAMPION)
    if champion is None:
        return None, None
    if early is not None and early.exception() is None:
        version, scored = early.result()
        if version == str(champion):
            return version, scored
    model: Pipeline = mlflow.sklearn.load_model(f"models:/{name}/{champion}")

    # Filled here, not by the model: a champion registered before the fill became the model's
    # first step (a two-step pipeline) refuses NaN; every shape takes the filled IDs.
    def filled(ids: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(fill_missing_ids(ids.to_numpy()), columns=FEATURES)

    return str(champion), rmse(model, val, inputs=filled)


def validation_rmse(tracking_uri: str, name: str, version: str) -> float:
    """The validation RMSE that version `version` of `name` was registered with."""
    client = MlflowClient(tracking_uri)
    run_id = client.get_model_version(name, version).run_id
    if run_id is None:
        raise LookupError(f"version {version} of {name} was registered without a run")
    return float(client.get_run(run_id).data.metrics["val_rmse"])


def log_live_metrics(
    target: RegistryTarget,
    dataset: str,
    month: str,
    report: TrafficReport,
    validation_rmse: float,
    flow_run_id: str | None,
) -> str:
    """One MLflow run `live-<month>` in the dataset's experiment with the replay's measures
    beside the validation RMSE, tagged with the model version that answered; its URL."""
    version = report.version
    metrics = {**report.numbers(), "validation_rmse": validation_rmse}
    client = MlflowClient(target.tracking_uri)
    try:
        experiment_id = _experiment_id(client, model_name(dataset))
        run = client.create_run(
            experiment_id,
            run_name=f"live-{month}",
            tags={
                "kind": "live-traffic",
                "month": month,
                "model_name": model_name(dataset),
                "model_version": version or "",
                FLOW_RUN_TAG: flow_run_id or "",
                "prefect.flow_run_url": target.flow_run_url or "",
            },
        )
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
    except (MlflowException, OSError) as error:
        raise RegistryUnavailableError(
            f"MLflow at {target.tracking_uri} did not take the live metrics ({error})"
        ) from error
    return f"{_ui(target)}/#/experiments/{experiment_id}/runs/{run.info.run_id}"
