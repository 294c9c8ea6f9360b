"""The model registry against a real MLflow server (and Prefect's lock for promotions)."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import get_model_info, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType
from prefect.settings import PREFECT_API_URL, temporary_settings
from sklearn.metrics import root_mean_squared_error
from sklearn.pipeline import Pipeline

from common.contract import PROMOTION_LOCK
from devstack.stack import MLFLOW_BIN, LocalStack, free_port
from serving.champions import _checked, lookup_tables
from testkit.prefect_api import PrefectApi
from trainer.datasets import DATASETS
from trainer.features import FEATURES, TARGET, prepare
from trainer.models import ModelBundle
from trainer.promotion_lock import DEAD_HOLDER_SECONDS, LEASE_SECONDS, promotion_lock
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    FLOW_RUN_TAG,
    PIP_REQUIREMENTS,
    TRUSTED_TYPES,
    PromotionLockError,
    Registration,
    RegistryTarget,
    RegistryUnavailableError,
    _code_package,
    model_name,
    register_and_promote,
)
from trainer.synthetic import generate_month
from trainer.training import build_model, fit_and_evaluate

pytestmark = pytest.mark.integration

FHV = DATASETS["fhv"]
ROWS = 5_000


def _month(month: str) -> pd.DataFrame:
    return prepare(generate_month(FHV, month, ROWS, seed=7).to_pandas(), FHV)


@pytest.fixture(scope="module")
def months() -> dict[str, pd.DataFrame]:
    return {month: _month(month) for month in ("2021-01", "2021-02", "2021-03")}


def _bundle(dataset: str, train: pd.DataFrame, val: pd.DataFrame, val_month: str) -> ModelBundle:
    model, metrics = fit_and_evaluate(train, val)
    return ModelBundle(
        model=model,
        dataset=dataset,
        train_month="2021-01",
        val_month=val_month,
        metrics=metrics,
        data_sources={"2021-01": "synthetic", val_month: "synthetic"},
        trained_at="2026-11-27T00:00:00Z",
        flow_run_id=str(uuid.uuid4()),
    )


def _scrambled(trips: pd.DataFrame) -> pd.DataFrame:
    """The same trips with durations shuffled: a model fitted on them is worse."""
    shuffled = trips.copy()
    shuffled[TARGET] = trips[TARGET].sample(frac=1, random_state=1).to_numpy()
    return shuffled


@pytest.fixture
def dataset() -> str:
    """A model name of the test's own: tests do not see each other's versions."""
    return f"test{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def target(stack: LocalStack) -> RegistryTarget:
    return RegistryTarget(tracking_uri=stack.mlflow_url, ui_url=stack.mlflow_url)


@pytest.fixture(scope="module")
def prefect_lock(stack: LocalStack) -> Iterator[None]:
    """The promotion lock is Prefect's global concurrency limit, on the stack's server."""
    with temporary_settings({PREFECT_API_URL: stack.api_url}):
        yield


def _lock():
    return promotion_lock(timeout_seconds=60)


def _alias(target: RegistryTarget, dataset: str, alias: str) -> str:
    client = MlflowClient(target.tracking_uri)
    return str(client.get_model_version_by_alias(model_name(dataset), alias).version)


def test_first_then_worse_then_better(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    train, val = months["2021-01"], months["2021-02"]
    first = register_and_promote(target, _bundle(dataset, train, val, "2021-02"), val, _lock)
    assert (first.version, first.alias, first.champion_version) == ("1", CHAMPION, None)
    assert "first version" in first.decision

    worse_bundle = _bundle(dataset, _scrambled(train), val, "2021-02")
    worse = register_and_promote(target, worse_bundle, val, _lock)
    assert (worse.version, worse.alias, worse.champion_version) == ("2", CHALLENGER, "1")
    # The champion re-scored on the same trips gives the RMSE it was validated with.
    assert worse.champion_rmse == pytest.approx(first.val_rmse, rel=1e-9)
    assert worse.val_rmse > worse.champion_rmse
    assert "does not beat" in worse.decision

    # Fitted on the validation month itself: better on it than the champion.
    better = register_and_promote(target, _bundle(dataset, val, val, "2021-02"), val, _lock)
    assert (better.version, better.alias, better.champion_version) == ("3", CHAMPION, "1")
    assert better.val_rmse < better.champion_rmse

    assert _alias(target, dataset, CHAMPION) == "3"
    assert _alias(target, dataset, CHALLENGER) == "2"
    client = MlflowClient(target.tracking_uri)
    version = client.get_model_version(model_name(dataset), "2")
    assert version.description == worse.decision
    assert f"{worse.champion_rmse:.4f}" in version.description
    run = client.get_run(worse.run_id)
    assert run.data.tags[FLOW_RUN_TAG] == worse_bundle.flow_run_id
    assert run.data.metrics["val_rmse"] == pytest.approx(worse_bundle.metrics.val_rmse)
    assert run.data.params["val_month"] == "2021-02"
    assert run.data.params["features"] == str(worse_bundle.metrics.features)
    assert worse.run_url.startswith(f"{target.ui_url}/#/experiments/")


def test_the_champion_is_re_scored_on_the_new_validation_month(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    old_val, new_val = months["2021-02"], months["2021-03"]
    first_bundle = _bundle(dataset, months["2021-01"], old_val, "2021-02")
    register_and_promote(target, first_bundle, old_val, _lock)
    second = register_and_promote(
        target, _bundle(dataset, old_val, new_val, "2021-03"), new_val, _lock
    )
    # Compared on 2021-03, where the champion was never scored before.
    on_new_month = root_mean_squared_error(
        new_val[TARGET], first_bundle.model.predict(new_val[FEATURES])
    )
    assert second.champion_rmse == pytest.approx(on_new_month, rel=1e-9)
    assert second.champion_rmse != pytest.approx(first_bundle.metrics.val_rmse, rel=1e-6)
    assert second.alias == (CHAMPION if second.val_rmse < on_new_month else CHALLENGER)


def test_two_runs_that_end_together_are_promoted_one_after_the_other(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    """Both reach the promotion at once, with no champion yet. Unserialised, both would read
    "no champion" and both take it, the last writer winning; serialised, the second compares
    against the first, so the better model ends as champion whichever came first."""
    train, val = months["2021-01"], months["2021-02"]
    good = _bundle(dataset, val, val, "2021-02")
    bad = _bundle(dataset, _scrambled(train), val, "2021-02")
    both_at_the_lock = threading.Barrier(2, timeout=120)
    held: list[tuple[float, float]] = []

    @contextlib.contextmanager
    def recorded_lock() -> Iterator[None]:
        both_at_the_lock.wait()
        with _lock():
            start = time.monotonic()
            yield
            held.append((start, time.monotonic()))

    results: dict[str, Registration] = {}
    errors: list[BaseException] = []

    def promote(label: str, bundle: ModelBundle) -> None:
        try:
            with temporary_settings({PREFECT_API_URL: target_api_url}):
                results[label] = register_and_promote(target, bundle, val, recorded_lock)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    target_api_url = PREFECT_API_URL.value()
    threads = [
        threading.Thread(target=promote, args=(label, bundle))
        for label, bundle in (("good", good), ("bad", bad))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    (_, first_end), (second_start, _) = sorted(held)
    assert second_start >= first_end, "the two promotions overlapped"
    # The first found no champion and took it; the second compared against the first.
    first, second = sorted(results.values(), key=lambda r: r.champion_version is not None)
    assert (first.champion_version, first.alias) == (None, CHAMPION)
    assert second.champion_version == first.version
    # The good model is champion whichever came first; the bad one lost if it came second.
    assert results["good"].alias == CHAMPION
    assert _alias(target, dataset, CHAMPION) == results["good"].version
    if second is results["bad"]:
        assert results["bad"].alias == CHALLENGER


def test_mlflow_unreachable_is_a_clear_error(
    months: dict[str, pd.DataFrame], dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

    nowhere = RegistryTarget(tracking_uri=f"http://127.0.0.1:{free_port()}", ui_url="-")
    val = months["2021-02"]
    bundle = _bundle(dataset, months["2021-01"], val, "2021-02")
    with pytest.raises(RegistryUnavailableError, match=f"MLflow at {nowhere.tracking_uri}"):
        register_and_promote(nowhere, bundle, val, contextlib.nullcontext)


def test_train_model_registers_and_fails_clearly_while_mlflow_is_down(
    stack: LocalStack, prefect: PrefectApi
) -> None:
    load = prefect.run("load-data", {"month": "2020-11", "source": "synthetic"})
    load2 = prefect.run("load-data", {"month": "2020-12", "source": "synthetic"})
    assert load["state"]["type"] == load2["state"]["type"] == "COMPLETED"

    run = prefect.run("train-model", {"date": "2021-01-20"})
    assert run["state"]["type"] == "COMPLETED", run["state"]
    [artifact] = [a for a in prefect.artifacts(run["id"]) if a["key"] == "fhv-model-registry"]
    [row] = json.loads(artifact["data"])
    client = MlflowClient(stack.mlflow_url)
    version = client.get_model_version(model_name("fhv"), row["version"])
    assert version.tags[FLOW_RUN_TAG] == run["id"]
    assert row["alias"] in (CHAMPION, CHALLENGER)
    assert (
        str(client.get_model_version_by_alias(model_name("fhv"), row["alias"]).version)
        == (row["version"])
    )
    assert artifact["description"] == version.description

    stack.stop_service("mlflow")
    try:
        # Few retries, so that the outage outlasts them in seconds, not minutes.
        env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
        response = prefect.create_run(
            "train-model", {"date": "2021-01-20"}, job_variables={"env": env}
        )
        response.raise_for_status()
        failed = prefect.wait(response.json()["id"])
    finally:
        stack.start_mlflow()
        stack.wait_for_mlflow()
    assert failed["state"]["type"] == "FAILED", failed["state"]
    message = failed["state"]["message"]
    assert f"MLflow at {stack.mlflow_url}" in message, message
    # Nothing lost: the model file and the metrics artifact are there.
    saved = message.split("the model is saved at ")[1].rstrip(".'\"")
    assert Path(saved).is_file(), message
    keys = {a["key"] for a in prefect.artifacts(failed["id"])}
    assert "fhv-model-metrics" in keys and "fhv-model-registry" not in keys


# -- the model as MLflow's users load it -----------------------------------------------------


def _champion_uri(dataset: str) -> str:
    return f"models:/{model_name(dataset)}@{CHAMPION}"


def test_the_champion_takes_location_ids_as_the_files_hold_them(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    """FHV's float64 with NaN, or integers: through pyfunc (what `mlflow models serve` uses,
    and which enforces the signature) and through the sklearn flavour, our predictions."""
    train, val = months["2021-01"], months["2021-02"]
    bundle = _bundle(dataset, train, val, "2021-02")
    register_and_promote(target, bundle, val, _lock)
    raw = val[FEATURES].head(500)
    assert (raw.dtypes == "float64").all() and raw.isna().any().all()
    as_ints = raw.fillna(-1).astype("int64")
    ours = bundle.model.predict(raw)
    np.testing.assert_array_equal(bundle.model.predict(as_ints), ours)

    mlflow.set_tracking_uri(target.tracking_uri)
    signature = get_model_info(_champion_uri(dataset)).signature
    columns = signature.inputs.inputs
    assert [c.name for c in columns] == FEATURES
    assert all(isinstance(c.type, AnyType) and c.required for c in columns)
    for load in (mlflow.pyfunc.load_model, mlflow.sklearn.load_model):
        model = load(_champion_uri(dataset))
        for rows in (raw, as_ints):
            np.testing.assert_array_equal(np.asarray(model.predict(rows)).ravel(), ours)


def _register_old_shape(
    target: RegistryTarget, dataset: str, train: pd.DataFrame, val: pd.DataFrame
) -> tuple[Pipeline, str]:
    """A champion as train-model registered it before the fill moved into the model: IDs
    filled with -1 and cast to int64 before the model, which is encoder and regressor only,
    and a signature inferred from those int64 columns (`long`)."""
    train_ids, val_ids = (f[FEATURES].fillna(-1).astype("int64") for f in (train, val))
    model = Pipeline(build_model().steps[1:]).fit(train_ids, train[TARGET])
    example = val_ids.head(5)
    mlflow.set_tracking_uri(target.tracking_uri)
    experiment_id = MlflowClient(target.tracking_uri).create_experiment(model_name(dataset))
    with mlflow.start_run(experiment_id=experiment_id):
        mlflow.log_metric("val_rmse", root_mean_squared_error(val[TARGET], model.predict(val_ids)))
        logged = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example, model.predict(example)),
            input_example=example,
            pip_requirements=PIP_REQUIREMENTS,
            code_paths=[str(_code_package())],
            skops_trusted_types=TRUSTED_TYPES,
        )
    version = str(mlflow.register_model(logged.model_uri, model_name(dataset)).version)
    MlflowClient(target.tracking_uri).set_registered_model_alias(
        model_name(dataset), CHAMPION, version
    )
    return model, version


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer")  # the old way
def test_a_champion_of_the_old_shape_is_still_compared_and_served(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    train, val = months["2021-01"], months["2021-02"]
    old, old_version = _register_old_shape(target, dataset, train, val)
    # Why the fill moved: a signature of longs refuses the files' own columns.
    with pytest.raises(MlflowException):
        mlflow.pyfunc.load_model(_champion_uri(dataset)).predict(val[FEATURES].head(50))

    # Serving's lookup tables come from the old shape too, and agree with it on every zone.
    loaded = mlflow.sklearn.load_model(_champion_uri(dataset))
    tables = lookup_tables(loaded)
    assert tables is not None
    assert _checked(tables, loaded, tuple(FEATURES), model_name(dataset), old_version) is tables

    # A new version is compared with it on the raw validation trips (NaN where missing).
    assert val[FEATURES].isna().any().all()
    new = register_and_promote(target, _bundle(dataset, val, val, "2021-02"), val, _lock)
    filled = val[FEATURES].fillna(-1).astype("int64")
    expected = root_mean_squared_error(val[TARGET], old.predict(filled))
    assert new.champion_version == old_version
    assert new.champion_rmse == pytest.approx(expected, rel=1e-12)
    assert new.alias == CHAMPION  # fitted on the validation month itself


def test_mlflow_models_serve_answers_a_null_id(
    stack: LocalStack,
    target: RegistryTarget,
    months: dict[str, pd.DataFrame],
    dataset: str,
    prefect_lock: None,
) -> None:
    """MLflow's own server (from its environment, with only the code the model carries) takes
    a `dataframe_split` with nulls, as a TLC file's rows come."""
    train, val = months["2021-01"], months["2021-02"]
    bundle = _bundle(dataset, train, val, "2021-02")
    register_and_promote(target, bundle, val, _lock)
    port, name = free_port(), "mlflow-models-serve"
    command = [str(MLFLOW_BIN / "mlflow"), "models", "serve", "-m", _champion_uri(dataset)]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {"MLFLOW_TRACKING_URI": target.tracking_uri, "PYTHONPATH": ""}
    stack.start_service(name, command, {**stack.mlflow_env, **env})
    rows = [[None, 7], [132, 265], [132.0, None], [None, None]]
    try:
        url = f"http://127.0.0.1:{port}"
        stack.wait_until(lambda: httpx.get(f"{url}/ping").status_code == 200, 180, name)
        answer = httpx.post(
            f"{url}/invocations",
            json={"dataframe_split": {"columns": FEATURES, "data": rows}},
            timeout=60,
        )
    finally:
        stack.stop_service(name)
    assert answer.status_code == 200, answer.text
    expected = bundle.model.predict(pd.DataFrame(rows, columns=FEATURES, dtype="float64"))
    assert answer.json()["predictions"] == pytest.approx(list(expected), rel=1e-12)


# -- the promotion lock --------------------------------------------------------------------


def test_a_promotion_that_cannot_take_the_lock_blames_the_lock_and_leaves_a_challenger(
    target: RegistryTarget, months: dict[str, pd.DataFrame], dataset: str, prefect_lock: None
) -> None:
    val = months["2021-02"]
    with promotion_lock(timeout_seconds=60), pytest.raises(PromotionLockError) as raised:
        # Another promotion holds the lock for longer than this one waits.
        register_and_promote(
            target,
            _bundle(dataset, months["2021-01"], val, "2021-02"),
            val,
            lambda: promotion_lock(timeout_seconds=2),
        )
    message = str(raised.value)
    assert f"promotion lock (Prefect's global concurrency limit {PROMOTION_LOCK!r})" in message
    assert "was not free within 2 s" in message and "MLflow" not in message
    name = model_name(dataset)
    assert f"version 1 of {name} is {CHALLENGER}, not compared" in message
    version = MlflowClient(target.tracking_uri).get_model_version(name, "1")
    assert version.aliases == [CHALLENGER]
    assert "was not compared with the champion (PromotionLockError: " in version.description


# Holds the promotion lock as a run's promotion does, until it is killed.
HOLDER = """
import time
from trainer.promotion_lock import promotion_lock
with promotion_lock(timeout_seconds=60):
    print("held", flush=True)
    time.sleep(3600)
"""


def _active_slots(stack: LocalStack) -> int:
    response = httpx.get(f"{stack.api_url}/v2/concurrency_limits/{PROMOTION_LOCK}")
    response.raise_for_status()
    return int(response.json()["active_slots"])


def test_a_run_killed_inside_the_lock_holds_up_the_next_only_until_its_lease_ends(
    stack: LocalStack, prefect: PrefectApi
) -> None:
    """A holder killed with -9 never releases its slot; its 60 s lease ends and the server
    repossesses it. The next training run promotes within that and its own time (with
    Prefect's default lease, 300 s, it timed out first, and blamed MLflow)."""
    parameters = {"date": "2020-07-20", "auto_load": True, "source": "synthetic"}
    start = time.monotonic()
    baseline = prefect.run("train-model", parameters)
    own_seconds = time.monotonic() - start
    assert baseline["state"]["type"] == "COMPLETED", baseline["state"]

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER], env=stack.env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        acquired = time.monotonic()
        assert _active_slots(stack) == 1
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # no release: the slot stays taken
        holder.wait()
    killed = time.monotonic()
    assert _active_slots(stack) == 1

    run = prefect.run("train-model", parameters, timeout=DEAD_HOLDER_SECONDS + own_seconds + 60)
    done = time.monotonic()
    assert run["state"]["type"] == "COMPLETED", run["state"]
    [artifact] = [a for a in prefect.artifacts(run["id"]) if a["key"] == "fhv-model-registry"]
    [row] = json.loads(artifact["data"])
    assert row["alias"] in (CHAMPION, CHALLENGER)
    assert _active_slots(stack) == 0
    # It waited for the dead holder's lease to end ...
    assert done - acquired >= LEASE_SECONDS
    # ... and no longer than the lease, the repossessor, a retry, and its own time.
    assert done - killed <= DEAD_HOLDER_SECONDS + own_seconds + 15
    print(
        f"\npromotion lock: a training run takes {own_seconds:.1f} s alone; killed inside "
        f"the lock, the next run completed {done - killed:.1f} s after the kill "
        f"({done - acquired:.1f} s after the dead holder took the lock)"
    )
