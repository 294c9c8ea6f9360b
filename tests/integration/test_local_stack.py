"""`make dev`'s launcher: a second start on the same state picks up where the first stopped."""

from pathlib import Path

import psutil
import pytest

from devstack.stack import LocalStack, StackError
from integration.conftest import free_port
from testkit.prefect_api import PrefectApi

pytestmark = pytest.mark.integration


def test_restart_keeps_state_and_stop_leaves_nothing_running(tmp_path: Path) -> None:
    ports = {
        "port": free_port(),
        "api_port": free_port(),
        "mlflow_port": free_port(),
        "serving_port": free_port(),
    }
    first = LocalStack(tmp_path, **ports, echo=False, extra_env={"SYNTHETIC_ROWS": "2000"})
    first.start()
    try:
        api = PrefectApi(first.api_url)
        deployment = api.deployment("train-model")
        run = api.run("load-data", {"month": "2021-03", "source": "synthetic"})
        assert run["state"]["type"] == "COMPLETED", run["state"]
        # Every process, with their children: MLflow's uvicorn workers among them.
        tops = [psutil.Process(started.pid) for started in first.processes.values()]
        pids = [process.pid for top in tops for process in (top, *top.children(recursive=True))]
        assert len(pids) > len(first.processes)
    finally:
        first.stop()
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()

    second = LocalStack(tmp_path, **ports, echo=False)
    second.start()
    try:
        api = PrefectApi(second.api_url)
        assert api.deployment("train-model")["id"] == deployment["id"]
        assert api.flow_run(run["id"])["state"]["type"] == "COMPLETED"
        assert (tmp_path / "data" / "fhv" / "fhv_tripdata_2021-03.parquet").exists()
    finally:
        second.stop()


def test_a_taken_port_is_a_clear_error(tmp_path: Path, stack: LocalStack) -> None:
    with pytest.raises(StackError, match=f"port {stack.port} is in use"):
        LocalStack(tmp_path, port=stack.port, api_port=free_port(), echo=False).start()
