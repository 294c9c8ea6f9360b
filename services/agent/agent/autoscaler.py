"""`python -m agent.autoscaler`: keep the number of agents in step with the pool's backlog.

Every poll it reads the pool from the Prefect API (agent.backlog), asks the policy
(agent.scaling) for a target, and starts or stops agents through an actuator
(agent.actuators): Compose containers, or local processes. It logs each decision with its
inputs and serves them as Prometheus gauges on /metrics, for dashboards or KEDA.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import Counter, Gauge, start_http_server

from agent.actuators import COMPOSE_PROJECT, Actuator, DockerActuator, ProcessActuator
from agent.backlog import PoolSnapshot, read_pool
from agent.scaling import Decision, ScalerMemory, ScalingPolicy, agents_to_stop, decide
from agent.settings import AutoscalerSettings

logger = logging.getLogger("agent.autoscaler")

WAITING = Gauge("autoscaler_waiting_runs", "Runs due to start: Scheduled/Late and due, Pending")
RUNNING = Gauge("autoscaler_running_runs", "Runs Running or Cancelling on the pool")
CURRENT = Gauge("autoscaler_current_agents", "Agents started and not being stopped")
DESIRED = Gauge("autoscaler_desired_agents", "Agents the backlog asks for, within the bounds")
ONLINE = Gauge("autoscaler_online_agents", "Agents the Prefect server sees online on the pool")
STARTED = Counter("autoscaler_agents_started", "Agents started")
STOPPED = Counter("autoscaler_agents_stopped", "Agents stopped (idle ones only)")
ERRORS = Counter("autoscaler_errors", "Polls that failed (Prefect or Docker unreachable)")


class Autoscaler:
    def __init__(
        self,
        policy: ScalingPolicy,
        actuator: Actuator,
        read_snapshot: Callable[[], PoolSnapshot],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.actuator = actuator
        self.read_snapshot = read_snapshot
        self.clock = clock
        self.memory = ScalerMemory()
        self._last_logged: tuple[object, ...] | None = None

    def tick(self) -> Decision | None:
        """One poll: read, decide, act. A failed read changes nothing."""
        try:
            agents = self.actuator.agents()
            snapshot = self.read_snapshot()
        except Exception as exc:
            ERRORS.inc()
            logger.warning("poll failed, agents left as they are: %s: %s", type(exc).__name__, exc)
            return None
        decision = decide(self.policy, snapshot.backlog, len(agents), self.memory, self.clock())
        self.memory = decision.memory
        change = decision.change(len(agents))
        action = "none"
        if change > 0:
            action = f"start {change}"
            try:
                self.actuator.start(change)
                STARTED.inc(change)
            except Exception as exc:
                ERRORS.inc()
                action = f"start {change} failed: {exc}"
        elif change < 0:
            action = self._scale_down(agents, snapshot, -change)
        self._report(snapshot, agents, decision, action)
        return decision

    def _scale_down(self, agents: list[str], snapshot: PoolSnapshot, count: int) -> str:
        busy = set()
        ownerless = 0
        for run in snapshot.busy_runs:
            if run.worker_name is None:
                ownerless += 1
            elif (owner := self.actuator.owner(run.worker_name)) is not None:
                busy.add(owner)
        chosen = agents_to_stop(agents, busy, count, ownerless_runs=ownerless)
        for agent in chosen:
            self.actuator.stop(agent)
            STOPPED.inc()
        if ownerless:
            return f"stop none: {ownerless} busy runs have no agent recorded yet"
        held = count - len(chosen)
        return f"stop {len(chosen)}" + (f" ({held} busy agents kept)" if held else "")

    def _report(
        self, snapshot: PoolSnapshot, agents: list[str], decision: Decision, action: str
    ) -> None:
        backlog = snapshot.backlog
        WAITING.set(backlog.waiting)
        RUNNING.set(backlog.running)
        CURRENT.set(len(agents))
        DESIRED.set(decision.desired)
        ONLINE.set(snapshot.online_agents)
        inputs = (backlog, len(agents), snapshot.online_agents, decision.desired, action)
        # Every decision at DEBUG; at INFO, those that differ from the one before.
        level = logging.DEBUG if inputs == self._last_logged and action == "none" else logging.INFO
        self._last_logged = inputs
        logger.log(
            level,
            "waiting=%d running=%d current=%d online=%d desired=%d target=%d action=%s (%s)",
            backlog.waiting,
            backlog.running,
            len(agents),
            snapshot.online_agents,
            decision.desired,
            decision.target,
            action,
            decision.reason,
        )


def build_actuator(settings: AutoscalerSettings) -> Actuator:
    grace = settings.autoscaler_stop_grace_seconds
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
    # While the server is away, fail a poll fast and try again at the next, rather than
    # retrying inside one poll for a minute.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "1")
    from prefect import get_client

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
    try:
        with get_client(sync_client=True) as client:
            scaler = Autoscaler(
                policy,
                actuator,
                lambda: read_pool(client, settings.work_pool_name, datetime.now(UTC)),
            )
            while not stop.is_set():
                scaler.tick()
                stop.wait(settings.autoscaler_poll_seconds)
    finally:
        logger.info("autoscaler stopping")
        actuator.close()


if __name__ == "__main__":
    main()
