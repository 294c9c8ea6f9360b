import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from agent.__main__ import worker_command
from agent.settings import AgentSettings
from agent.worker import wait_for_forkserver
from common.agents import ACTIVE, STANDBY, read_state, write_state
from common.contract import HEARTBEAT_SECONDS
from trainer.register import (
    _automation_spec,
    deployments,
    spec_version,
    zombie_automation,
)
from trainer.settings import TrainerSettings


def _versions(settings: TrainerSettings) -> list[str]:
    return [spec_version(d, settings.work_pool_name) for d in deployments(settings)]


def test_deployment_defaults_follow_the_seed() -> None:
    train, load, send, probe = deployments(TrainerSettings())
    assert (train.flow_name, train.name) == ("train-model", "monthly")
    assert train.schedules[0].schedule.cron == "0 9 15 * *"
    assert train.schedules[0].schedule.timezone == "America/New_York"
    assert set(train.tags) == {"ml"}
    assert train.entrypoint == "trainer.flows.train_model"
    assert (load.flow_name, load.schedules[0].schedule.cron) == ("load-data", "0 9 1 * *")
    # The seed's slot: after load-data on the 1st.
    assert (send.flow_name, send.schedules[0].schedule.cron) == ("send-requests", "0 11 1 * *")
    # The probe runs on demand only.
    assert (probe.flow_name, probe.schedules) == ("probe", [])


def test_spec_version_is_stable_and_tracks_every_setting() -> None:
    base = TrainerSettings()
    assert _versions(base) == _versions(TrainerSettings())
    assert len(set(_versions(base))) == 4
    changed_cron = TrainerSettings(train_cron="0 9 16 * *")
    assert _versions(changed_cron)[0] != _versions(base)[0]
    assert _versions(changed_cron)[1] == _versions(base)[1]
    assert _versions(TrainerSettings(work_pool_name="other")) != _versions(base)
    assert _versions(TrainerSettings(default_data_source="synthetic"))[1] != _versions(base)[1]


def test_worker_command() -> None:
    settings = AgentSettings(work_pool_name="p", agent_name="a1", agent_limit=2)
    # Prefect's CLI, run by agent.worker once the fork server is warm.
    assert worker_command(settings) == [
        sys.executable, "-m", "agent.worker", "--",
        "worker", "start", "--pool", "p", "--type", "process", "--name", "a1", "--limit", "2",
    ]  # fmt: skip
    assert worker_command(settings, standby=True)[:4] == [
        sys.executable, "-m", "agent.worker", "--standby"
    ]  # fmt: skip
    assert worker_command(AgentSettings(agent_healthcheck=True))[-1] == "--with-healthcheck"


def test_the_state_file_is_replaced_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "agent.state")
    assert read_state(path) is None and read_state(None) is None
    write_state(path, STANDBY)
    assert read_state(path) == STANDBY
    write_state(path, ACTIVE)
    assert read_state(path) == ACTIVE
    assert [p.name for p in tmp_path.iterdir()] == ["agent.state"]  # no partial file left


def test_health_is_a_warm_standby_or_a_worker_that_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent import health

    path = tmp_path / "agent.state"
    monkeypatch.setenv("AGENT_STATE_FILE", str(path))
    with socket.socket() as closed:  # a port that nothing listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setattr(
            health, "WORKER_HEALTH_URL", f"http://127.0.0.1:{closed.getsockname()[1]}/health"
        )
        assert health.main() == 1  # still warming: no state yet, no worker
        write_state(str(path), STANDBY)
        assert health.main() == 0
        write_state(str(path), ACTIVE)
        assert health.main() == 1  # promoted, and its worker does not answer


def test_the_worker_waits_for_the_fork_server_until_it_listens_or_dies(tmp_path: Path) -> None:
    path = str(tmp_path / "fs.sock")
    assert wait_for_forkserver(None, None) == "no fork server"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert "gone" in wait_for_forkserver(path, gone.pid, timeout=5)
    assert "not listening after 0 s" in wait_for_forkserver(path, None, timeout=0.3)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(path)
        listener.listen()
        assert wait_for_forkserver(path, os.getpid()).startswith("fork server warm")


def test_runs_get_heartbeats_and_retries_that_outlast_an_outage() -> None:
    for deployment in deployments(TrainerSettings()):
        env = deployment.job_variables["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS) == "30"
        retries = int(env["PREFECT_CLIENT_MAX_RETRIES"])
        assert sum(2**n for n in range(1, retries + 1)) > 200  # seconds of back-off in all
        assert env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500"


def test_the_zombie_automation_is_never_forced() -> None:
    automation = zombie_automation()
    [action] = automation.actions
    assert action.force is False  # a heartbeat after completion must not crash a run
    assert automation.trigger.within.total_seconds() == 3 * HEARTBEAT_SECONDS
    assert _automation_spec(automation) == _automation_spec(zombie_automation())
    assert _automation_spec(zombie_automation(within_seconds=60)) != _automation_spec(automation)
