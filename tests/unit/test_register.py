"""What trainer.register creates: deployments (schedules, versions, heartbeats), an automation."""

from common.contract import FLOW_ENTRYPOINT_ENV, HEARTBEAT_SECONDS, RUN_ENVIRONMENT
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


def test_runs_get_heartbeats_and_retries_that_outlast_an_outage() -> None:
    for deployment in deployments(TrainerSettings()):
        env = deployment.job_variables["env"]
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS) == "30"
        retries = int(env["PREFECT_CLIENT_MAX_RETRIES"])
        assert sum(2**n for n in range(1, retries + 1)) > 200  # seconds of back-off in all
        assert env["PREFECT_CLIENT_RETRY_EXTRA_CODES"] == "500"


def test_each_deployment_s_runs_are_told_its_entrypoint_and_it_loads_its_flow() -> None:
    from prefect.flows import load_flow_from_entrypoint

    made = deployments(TrainerSettings())
    for deployment in made:
        env = deployment.job_variables["env"]
        assert env == {**RUN_ENVIRONMENT, FLOW_ENTRYPOINT_ENV: deployment.entrypoint}
        # What the engine does with it (prefect.flow_engine.load_flow): the deployment's flow.
        flow = load_flow_from_entrypoint(env[FLOW_ENTRYPOINT_ENV], use_placeholder_flow=False)
        assert flow.name == deployment.flow_name
    assert len({d.job_variables["env"][FLOW_ENTRYPOINT_ENV] for d in made}) == len(made)


def test_the_zombie_automation_is_never_forced() -> None:
    automation = zombie_automation()
    [action] = automation.actions
    assert action.force is False  # a heartbeat after completion must not crash a run
    assert automation.trigger.within.total_seconds() == 3 * HEARTBEAT_SECONDS
    assert _automation_spec(automation) == _automation_spec(zombie_automation())
    assert _automation_spec(zombie_automation(within_seconds=60)) != _automation_spec(automation)
