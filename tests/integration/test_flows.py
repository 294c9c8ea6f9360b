"""The flows run through their deployments on a real server and worker."""

import json
import re
import time
from pathlib import Path

import pytest

from devstack.stack import LocalStack
from integration.conftest import SYNTHETIC_ROWS
from testkit import reference
from testkit.prefect_api import PrefectApi
from testkit.tlc import TlcServer
from trainer.datasets import DATASETS
from trainer.memory import estimate_mib
from trainer.models import load_model
from trainer.store import Store

pytestmark = pytest.mark.integration

FHV = DATASETS["fhv"]


def _manifest(data_dir: Path, month: str) -> dict:
    return json.loads((data_dir / "fhv" / f"fhv_tripdata_{month}.json").read_text())


def test_deployments_are_registered_with_their_schedules(prefect: PrefectApi) -> None:
    train = prefect.deployment("train-model")
    assert train["work_pool_name"] == "training"
    assert set(train["tags"]) == {"ml"}
    [schedule] = train["schedules"]
    assert schedule["schedule"] == {
        "cron": "0 9 15 * *",
        "timezone": "America/New_York",
        "day_or": True,
    }
    load = prefect.deployment("load-data")
    assert load["schedules"][0]["schedule"]["cron"] == "0 9 1 * *"


def test_the_scheduler_plans_monthly_runs(prefect: PrefectApi) -> None:
    deployment_id = prefect.deployment("train-model")["id"]
    deadline = time.monotonic() + 90
    while (
        prefect.count_runs(["SCHEDULED"], deployment_id=deployment_id) < 3
        and time.monotonic() < deadline
    ):
        time.sleep(1)
    assert prefect.count_runs(["SCHEDULED"], deployment_id=deployment_id) >= 3


def test_registering_again_changes_nothing(stack: LocalStack, prefect: PrefectApi) -> None:
    before = [prefect.deployment(flow) for flow in ("train-model", "load-data")]
    stack.run_once("trainer")
    after = [prefect.deployment(flow) for flow in ("train-model", "load-data")]
    for old, new in zip(before, after, strict=True):
        # Not `updated`: workers polling the pool touch the deployment's status.
        assert new["id"] == old["id"]
        assert new["version"] == old["version"]
        assert new["schedules"] == old["schedules"]  # same schedule ids: not re-created
    log = (stack.log_dir / "trainer.log").read_text()
    assert "deployed 0 changed deployments" in log
    # The zombie automation was created on the first start, and left alone on every other.
    outcomes = re.findall(r"automation 'crash-runs-without-heartbeats': (\w+)", log)
    assert outcomes[0] == "created" and set(outcomes[1:]) == {"unchanged"}, outcomes


def test_load_data_synthetic(prefect: PrefectApi, data_dir: Path) -> None:
    run = prefect.run("load-data", {"month": "2021-01", "source": "synthetic"})
    assert run["state"]["type"] == "COMPLETED", run["state"]
    manifest = _manifest(data_dir, "2021-01")
    assert manifest["source"] == "synthetic" and manifest["rows"] == 20_000
    prefect.wait_for_log(run["id"], "stored fhv 2021-01: 20000 rows")


def test_load_data_downloads_from_the_tlc_url(
    prefect: PrefectApi, data_dir: Path, tlc: TlcServer
) -> None:
    tlc.publish(FHV, "2021-02", rows=30_000)
    run = prefect.run("load-data", {"month": "2021-02", "source": "tlc"})
    assert run["state"]["type"] == "COMPLETED", run["state"]
    manifest = _manifest(data_dir, "2021-02")
    assert manifest["source"] == "tlc" and manifest["rows"] == 30_000
    assert manifest["origin"] == tlc.url_template.format(dataset="fhv", month="2021-02")
    prefect.wait_for_log(run["id"], "(100%)")


def test_train_model_completes_with_reference_metrics_artifact_and_model(
    prefect: PrefectApi, data_dir: Path, stack: LocalStack
) -> None:
    # Trains on 2021-01 (synthetic) and validates on 2021-02 (downloaded), loaded above.
    run = prefect.run("train-model", {"date": "2021-03-10"})
    assert run["state"]["type"] == "COMPLETED", run["state"]

    # The seed's pipeline with LSQR run to convergence: the same solution as our exact fit,
    # to 1e-7 on any CPU (the bound is derived in tests/unit/test_training.py).
    expected = reference.train_and_validate(
        str(data_dir / "fhv/fhv_tripdata_2021-01.parquet"),
        str(data_dir / "fhv/fhv_tripdata_2021-02.parquet"),
        tol=1e-12,
    )
    [artifact] = [a for a in prefect.artifacts(run["id"]) if a["key"] == "fhv-model-metrics"]
    table = {row["metric"]: row["value"] for row in json.loads(artifact["data"])}
    assert table["train_rows"] == expected["train_rows"]
    assert table["train_month"] == "2021-01 (synthetic)"
    assert table["val_month"] == "2021-02 (tlc)"

    bundle = load_model(Store(stack.env["MODEL_STORE_URL"]), table["model"])
    assert (bundle.train_month, bundle.val_month) == ("2021-01", "2021-02")
    # The artifact rounds to 6 decimals; the saved model keeps the unrounded metrics.
    assert table["val_rmse"] == round(bundle.metrics.val_rmse, 6)
    assert bundle.metrics.val_rmse == pytest.approx(expected["val_rmse"], rel=1e-7)
    assert bundle.metrics.train_rmse == pytest.approx(expected["train_rmse"], rel=1e-7)
    assert bundle.flow_run_id == run["id"]
    assert Path(table["model"]).is_relative_to(Path(stack.env["MODEL_STORE_URL"]))


def test_missing_month_fails_with_how_to_load_it(prefect: PrefectApi) -> None:
    run = prefect.run("train-model", {"date": "2012-05-15"})  # no test loads 2012
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "fhv data for 2012-03 is not in the data store" in message
    assert "fhv_tripdata_2012-03.parquet" in message
    assert "auto_load=true" in message


def test_auto_load_fetches_missing_months_first(prefect: PrefectApi, data_dir: Path) -> None:
    run = prefect.run(
        "train-model", {"date": "2022-03-01", "auto_load": True, "source": "synthetic"}
    )
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert _manifest(data_dir, "2022-01")["source"] == "synthetic"
    assert _manifest(data_dir, "2022-02")["source"] == "synthetic"


def test_a_month_over_the_memory_limit_fails_before_it_is_read(
    prefect: PrefectApi, data_dir: Path
) -> None:
    # The stack's months have SYNTHETIC_ROWS (20,000) rows: 770 MiB estimated, over 100.
    env = {"TRAINING_MEMORY_LIMIT_MB": "100"}
    parameters = {"date": "2016-03-10", "auto_load": True, "source": "synthetic"}
    response = prefect.create_run("train-model", parameters, job_variables={"env": env})
    response.raise_for_status()
    run = prefect.wait(response.json()["id"])
    assert run["state"]["type"] == "FAILED", run["state"]
    message = run["state"]["message"]
    assert f"fhv 2016-01 has {SYNTHETIC_ROWS:,} rows (from its parquet footer)" in message
    assert f"an estimated {estimate_mib(SYNTHETIC_ROWS):,} MiB" in message
    assert "over TRAINING_MEMORY_LIMIT_MB=100" in message
    assert "Raise TRAINING_MEMORY_LIMIT_MB" in message
    # Loaded (auto_load comes first), but nothing trained: no metrics, no model.
    assert _manifest(data_dir, "2016-01")["rows"] == SYNTHETIC_ROWS
    assert not [a for a in prefect.artifacts(run["id"]) if a["key"] == "fhv-model-metrics"]


def test_bad_date_fails_the_run_with_a_clear_message(prefect: PrefectApi) -> None:
    # Past the API (which refuses it), straight to Prefect: the engine checks the flow's
    # typed parameters before the flow starts, and says which one and why.
    run = prefect.run("train-model", {"date": "2021-02-30"})
    assert run["state"]["type"] == "FAILED"
    message = run["state"]["message"]
    assert "invalid parameters" in message and "date: " in message
    assert "day is out of range for month" in message  # the rule the API applies too
    # A month's pattern is in the schema Prefect enforces: refused when the run is created.
    response = prefect.create_run("load-data", {"month": "2021-6"})
    assert response.status_code == 409
    assert "month" in response.text and "'2021-6' is not valid" in response.text


def test_corrupt_download_fails_and_stores_nothing(
    prefect: PrefectApi, data_dir: Path, tlc: TlcServer
) -> None:
    published = tlc.publish(FHV, "2020-05")
    published.write_bytes(published.read_bytes()[: published.stat().st_size // 2])
    run = prefect.run("load-data", {"month": "2020-05", "source": "tlc"})
    assert run["state"]["type"] == "FAILED"
    assert "is not a readable parquet file" in run["state"]["message"]
    assert not list((data_dir / "fhv").glob("fhv_tripdata_2020-05*"))


def test_unknown_dataset_is_refused_when_the_run_is_created(prefect: PrefectApi) -> None:
    response = prefect.create_run("train-model", {"dataset": "purple"})
    assert response.status_code == 409
    assert "purple" in response.text
