"""Register the work pool and the deployments, idempotently: running it twice changes nothing.

Run once per start of the stack: `python -m trainer.register`.
"""

import hashlib
import json
import logging
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from prefect import deploy, get_client
from prefect._internal.versioning import VersionType
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron

from common.contract import (
    FLOW_ENTRYPOINT_ENV,
    HEARTBEAT_SECONDS,
    JOB_COMMAND,
    PROMOTION_LOCK,
    RUN_ENVIRONMENT,
)
from trainer.flows import load_data, probe, send_requests, train_model
from trainer.settings import TrainerSettings, get_settings

logger = logging.getLogger("trainer.register")

# Each run's process: the agent's launcher, which forks a warm, pre-imported engine from the
# agent's fork server (and runs `python -m prefect.engine` itself when there is none).
JOB_VARIABLES = {"command": JOB_COMMAND, "env": RUN_ENVIRONMENT}

ZOMBIE_AUTOMATION_NAME = "crash-runs-without-heartbeats"


def zombie_automation(
    name: str = ZOMBIE_AUTOMATION_NAME,
    runs: str = "*",
    within_seconds: float = 3 * HEARTBEAT_SECONDS,
) -> AutomationCore:
    """Prefect's documented "detect zombie flows" automation: a run whose heartbeats stop
    (its agent or container died) is marked Crashed, and the autoscaler reschedules it.
    `runs` narrows it to one flow run id (tests); `within_seconds`: three heartbeats.

    Not forced: a heartbeat that lands after a run ended would otherwise crash a finished
    run. Prefect's orchestration refuses terminal -> Crashed unless forced.
    """
    return AutomationCore(
        name=name,
        description=f"Marks a flow run Crashed when {within_seconds:.0f} s pass after a "
        "heartbeat with no heartbeat or state change (created by trainer.register).",
        trigger=EventTrigger(
            match={"prefect.resource.id": f"prefect.flow-run.{runs}"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"No heartbeat for {within_seconds:.0f} s: its agent is gone.",
                force=False,
            )
        ],
    )


def _automation_spec(automation: AutomationCore) -> dict:
    # What defines it: a stored automation also carries its id and timestamps.
    return automation.model_dump(mode="json", include=set(AutomationCore.model_fields))


def ensure_automation(client: SyncPrefectClient, automation: AutomationCore) -> str:
    """Create the automation, or update the one of that name if it differs; "created",
    "updated" or "unchanged". Duplicates of the name (a concurrent first start) are removed."""
    found = client.read_automations_by_name(automation.name)
    for duplicate in found[1:]:
        client.delete_automation(duplicate.id)
    if not found:
        client.create_automation(automation)
        return "created"
    first = found[0]
    if _automation_spec(first) == _automation_spec(automation):
        return "unchanged"
    client.update_automation(first.id, automation)
    return "updated"


def ensure_work_pool(name: str) -> None:
    """Create the process work pool if it is absent; leave an existing one as it is."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            logger.info("work pool %r exists", name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"), overwrite=True)
            logger.info("created work pool %r", name)


def deployments(settings: TrainerSettings) -> list[RunnerDeployment]:
    """The deployments, loaded by module path so any image or venv with `trainer` runs them."""
    made = [
        train_model.to_deployment(
            name=settings.deployment_name,
            schedules=[Cron(settings.train_cron, timezone=settings.schedule_timezone)],
            tags=["ml"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables=dict(JOB_VARIABLES),
            # Keep our digest as the version: otherwise Prefect swaps in the git commit
            # whenever the checkout has a remote, and every commit would look like a change.
            version_type=VersionType.SIMPLE,
            description="Monthly trip-duration training: month two before `date`, "
            "validated on the month before.",
        ),
        load_data.to_deployment(
            name=settings.deployment_name,
            schedules=[Cron(settings.load_cron, timezone=settings.schedule_timezone)],
            tags=["data"],
            parameters={"source": settings.default_data_source},
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables=dict(JOB_VARIABLES),
            version_type=VersionType.SIMPLE,
            description="Monthly load of last month's trips, ahead of training.",
        ),
        send_requests.to_deployment(
            name=settings.deployment_name,
            schedules=[Cron(settings.send_cron, timezone=settings.schedule_timezone)],
            tags=["traffic"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables=dict(JOB_VARIABLES),
            version_type=VersionType.SIMPLE,
            description="Monthly replay of last month's trips against the served champion "
            "(the seed's 2 requests per second); retrains when the model has drifted.",
        ),
        probe.to_deployment(
            name=settings.deployment_name,
            tags=["probe"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            job_variables=dict(JOB_VARIABLES),
            version_type=VersionType.SIMPLE,
            description="On demand: a run that only waits `seconds`, to check the agents "
            "end to end (and to exercise the autoscaler).",
        ),
    ]
    return [_with_entrypoint_in_env(_synchronous(deployment)) for deployment in made]


def _with_entrypoint_in_env(deployment: RunnerDeployment) -> RunnerDeployment:
    """The deployment, its runs told its entrypoint (FLOW_ENTRYPOINT_ENV)."""
    variables = dict(deployment.job_variables)
    variables["env"] = {**variables.get("env", {}), FLOW_ENTRYPOINT_ENV: deployment.entrypoint}
    deployment.job_variables = variables
    return deployment


def _synchronous(
    made: RunnerDeployment | Coroutine[Any, Any, RunnerDeployment],
) -> RunnerDeployment:
    """What `to_deployment` returns outside an event loop, as it is called here: the
    deployment (it is typed for either)."""
    if isinstance(made, Coroutine):
        made.close()
        raise TypeError("to_deployment was called inside an event loop")
    return made


def spec_version(deployment: RunnerDeployment, pool: str) -> str:
    """A digest of everything that defines the deployment, the flow's source included."""
    spec = deployment.model_dump(mode="json", exclude={"storage", "version"})
    spec.update(pool=pool, flow_version=deployment.version)
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    return f"spec-{digest[:12]}"


def stale_deployments(settings: TrainerSettings) -> list[RunnerDeployment]:
    """The deployments that are missing or differ from their registered version."""
    stale = []
    with get_client(sync_client=True) as client:
        for deployment in deployments(settings):
            deployment.version = spec_version(deployment, settings.work_pool_name)
            full_name = f"{deployment.flow_name}/{deployment.name}"
            try:
                current = client.read_deployment_by_name(full_name).version
            except ObjectNotFound:
                current = None
            if current == deployment.version:
                logger.info("deployment %s is up to date (%s)", full_name, current)
            else:
                stale.append(deployment)
    return stale


def register(settings: TrainerSettings) -> int:
    """Create the pool if absent and (re)deploy what changed; return how many were deployed.

    Unchanged deployments are not touched, so their schedules and scheduled runs stay.
    """
    ensure_work_pool(settings.work_pool_name)
    with get_client(sync_client=True) as client:
        outcome = ensure_automation(client, zombie_automation())
        # One promotion at a time in the model registry (trainer.registry).
        client.upsert_global_concurrency_limit_by_name(PROMOTION_LOCK, limit=1)
    logger.info("automation %r: %s", ZOMBIE_AUTOMATION_NAME, outcome)
    stale = stale_deployments(settings)
    if stale:
        deploy(
            *stale,
            work_pool_name=settings.work_pool_name,
            build=False,
            push=False,
            print_next_steps_message=False,
            ignore_warnings=True,
        )
    logger.info("deployed %d changed deployments on pool %r", len(stale), settings.work_pool_name)
    return len(stale)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    register(get_settings())


if __name__ == "__main__":
    main()
