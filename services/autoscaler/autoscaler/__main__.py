"""`python -m autoscaler`: keep the number of agents in step with the pool's backlog.

It builds the actuator the settings ask for (AUTOSCALER_BACKEND), serves /metrics, and runs
the loop (autoscaler.loop) every AUTOSCALER_POLL_SECONDS until SIGTERM or SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from datetime import UTC, datetime

from prometheus_client import start_http_server

from autoscaler.actuators import (
    COMPOSE_PROJECT,
    Actuator,
    DockerActuator,
    MetricsOnly,
    ProcessActuator,
)
from autoscaler.loop import Autoscaler
from autoscaler.prefect_api import PrefectPool, connect
from autoscaler.reconciler import Reconciler
from autoscaler.settings import AutoscalerSettings

logger = logging.getLogger("autoscaler")


def build_actuator(settings: AutoscalerSettings) -> Actuator:
    grace = settings.autoscaler_stop_grace_seconds
    if settings.autoscaler_backend == "metrics-only":
        return MetricsOnly()
    if settings.autoscaler_backend == "process":
        env = dict(os.environ, AGENT_LIMIT=str(settings.agent_limit))
        return ProcessActuator(env, grace)
    import docker  # only the docker backend needs the SDK and the socket

    client = docker.from_env()
    project = settings.autoscaler_compose_project or _own_compose_project(client)
    return DockerActuator(client, project, settings.autoscaler_agent_service, grace)


def _own_compose_project(client) -> str:  # client: docker.DockerClient
    """The Compose project of the container we run in (its id is our hostname)."""
    try:
        labels = client.containers.get(socket.gethostname()).labels
        return labels[COMPOSE_PROJECT]
    except Exception as exc:
        raise SystemExit(
            "cannot tell the Compose project of the agents: not running in a Compose container "
            f"({exc}); set AUTOSCALER_COMPOSE_PROJECT"
        ) from exc


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", force=True)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = AutoscalerSettings()
    policy = settings.policy()
    actuator = build_actuator(settings)
    start_http_server(settings.autoscaler_metrics_port, settings.autoscaler_metrics_host)
    logger.info(
        "autoscaling pool %r with the %s backend: %s; /metrics on %s:%d",
        settings.work_pool_name,
        settings.autoscaler_backend,
        policy,
        settings.autoscaler_metrics_host,
        settings.autoscaler_metrics_port,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    # One retry of a failed call, then the next poll tries again (see prefect_api.connect).
    retries = int(os.environ.get("PREFECT_CLIENT_MAX_RETRIES", "1"))
    try:
        with connect(retries) as client:
            prefect = PrefectPool(client, settings.work_pool_name)
            scaler = Autoscaler(
                policy,
                actuator,
                lambda: prefect.read_pool(datetime.now(UTC)),
                reconciler=Reconciler(settings.recovery_policy(), actuator, prefect)
                if actuator.acts
                else None,
            )
            while not stop.is_set():
                scaler.tick()
                stop.wait(settings.autoscaler_poll_seconds)
    finally:
        logger.info("autoscaler stopping")
        actuator.close()


if __name__ == "__main__":
    main()
