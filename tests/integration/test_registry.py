"""The model registry against a real MLflow server (and Prefect's lock for promotions)."""

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from prefect.concurrency.sync import concurrency
from prefect.settings import PREFECT_API_URL, temporary_settings
from sklearn.metrics import root_mean_squared_error

from devstack.stack import LocalStack, free_port
from testkit.prefect_api import PrefectApi
from trainer.datasets import DATASETS
from trainer.features import FEATURES, TARGET, prepare
from trainer.models import ModelBundle
from trainer.registry import (
    CHALLENGER,
    CHAMPION,
    FLOW_RUN_TAG,
    Registration,
    RegistryTarget,
    RegistryUnavailableError,
    model_name,
    register_and_promote,
)
from trainer.settings import PROMOTION_LOCK
from trainer.synthetic import generate_month
from trainer.training import fit_and_evaluate

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
    return concurrency(PROMOTION_LOCK, occupy=1, strict=True, timeout_seconds=60)


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
