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

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import SetStateStatus
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelled, Crashed, Scheduled
from prometheus_client import Counter, Gauge, start_http_server

from agent.actuators import (
    COMPOSE_PROJECT,
    Actuator,
    DockerActuator,
    MetricsOnly,
    ProcessActuator,
    Standby,
)
from agent.backlog import WORKER_LABEL, PoolSnapshot, read_crashed_runs, read_pool
from agent.recovery import (
    LOOKBACK,
    CrashedRun,
    RecoveryPolicy,
    Repair,
    end_orphaned_runs,
    retry_crashed_runs,
    without_stale_labels,
)
from agent.scaling import (
    Decision,
    ScalerMemory,
    ScalingPolicy,
    agents_to_stop,
    decide,
    scale_up_plan,
    standby_change,
)
from agent.settings import AutoscalerSettings

logger = logging.getLogger("agent.autoscaler")

WAITING = Gauge("autoscaler_waiting_runs", "Runs due to start: Scheduled/Late and due, Pending")
RUNNING = Gauge("autoscaler_running_runs", "Runs Running or Cancelling on the pool")
CURRENT = Gauge("autoscaler_current_agents", "Agents started and not being stopped")
DESIRED = Gauge("autoscaler_desired_agents", "Agents the backlog asks for, within the bounds")
ONLINE = Gauge("autoscaler_online_agents", "Agents the Prefect server sees online on the pool")
STANDBY = Gauge("autoscaler_standby_agents", "Standby agents: started, not polling yet")
STANDBY_READY = Gauge("autoscaler_standby_ready_agents", "Standby agents warm and waiting")
STARTED = Counter("autoscaler_agents_started", "Agents started cold (standby ones apart)")
PROMOTED = Counter("autoscaler_agents_promoted", "Standby agents promoted to agents")
STOPPED = Counter("autoscaler_agents_stopped", "Agents stopped (idle ones only)")
ERRORS = Counter("autoscaler_errors", "Polls that failed (Prefect or Docker unreachable)")
REPAIRS = Counter(
    "autoscaler_runs_repaired",
    "Runs recovered: crashed or cancelled (agent gone), or rescheduled after a crash",
    ["to"],
)


class Autoscaler:
    def __init__(
        self,
        policy: ScalingPolicy,
        actuator: Actuator,
        read_snapshot: Callable[[], PoolSnapshot],
        clock: Callable[[], float] = time.monotonic,
        reconciler: Reconciler | None = None,
    ) -> None:
        self.policy = policy
        self.actuator = actuator
        self.read_snapshot = read_snapshot
        self.clock = clock
        self.reconciler = reconciler
        self.memory = ScalerMemory()
        self._last_logged: tuple[object, ...] | None = None

    def tick(self) -> Decision | None:
        """One poll: read, decide, act. A failed read changes nothing."""
        try:
            agents = self.actuator.agents()
            standbys = self.actuator.standbys()
            snapshot = self.read_snapshot()
        except Exception as exc:
            ERRORS.inc()
            logger.warning("poll failed, agents left as they are: %s: %s", type(exc).__name__, exc)
            if self.reconciler is not None:
                self.reconciler.interrupted()
            return None
        decision = decide(self.policy, snapshot.backlog, len(agents), self.memory, self.clock())
        self.memory = decision.memory
        change = decision.change(len(agents))
        action = "none"
        if not self.actuator.acts:
            action = "none (metrics only)"
        elif change > 0:
            action, standbys = self._scale_up(change, standbys)
        elif change < 0:
            action, stopped = self._scale_down(agents, snapshot, -change)
            change = -stopped
        if self.actuator.acts:
            action += self._keep_standbys(snapshot, len(agents) + change, standbys)
        self._report(snapshot, agents, standbys, decision, action)
        if self.reconciler is not None:
            try:
                self.reconciler.reconcile(snapshot)
            except Exception as exc:
                ERRORS.inc()
                logger.warning("recovery failed this poll: %s: %s", type(exc).__name__, exc)
                self.reconciler.interrupted()
        return decision

    def _scale_up(self, change: int, standbys: list[Standby]) -> tuple[str, list[Standby]]:
        """Promote standby agents, the ready ones first; start the rest cold. Returns what
        was done and the standby agents left."""
        ready_first = [s.name for s in sorted(standbys, key=lambda s: not s.ready)]
        chosen, cold = scale_up_plan(change, ready_first)
        promoted = []
        for name in chosen:
            try:
                self.actuator.promote(name)
                promoted.append(name)
            except Exception as exc:  # gone meanwhile: a cold agent instead
                ERRORS.inc()
                logger.warning("could not promote %s: %s: %s", name, type(exc).__name__, exc)
                cold += 1
        PROMOTED.inc(len(promoted))
        action = f"promote {len(promoted)}" if promoted else ""
        if cold:
            action += (", " if action else "") + f"start {cold}"
            try:
                self.actuator.start(cold)
                STARTED.inc(cold)
            except Exception as exc:
                ERRORS.inc()
                action += f" failed: {exc}"
        return action, [s for s in standbys if s.name not in promoted]

    def _keep_standbys(self, snapshot: PoolSnapshot, agents: int, standbys: list[Standby]) -> str:
        """Start a standby agent while the pool is calm, or stop those beyond the target
        (those still warming up first). Returns what was done, to add to the action."""
        change = standby_change(self.policy, snapshot.backlog, agents, len(standbys))
        try:
            if change > 0:
                self.actuator.start(change, standby=True)
                return f"; start {change} standby"
            if change < 0:
                for standby in sorted(standbys, key=lambda s: s.ready)[:-change]:
                    self.actuator.stop(standby.name)
                return f"; stop {-change} standby"
        except Exception as exc:
            ERRORS.inc()
            return f"; standby agents: {type(exc).__name__}: {exc}"
        return ""

    def _scale_down(self, agents: list[str], snapshot: PoolSnapshot, count: int) -> tuple[str, int]:
        """Stop up to `count` idle agents; returns what was done and how many stopped."""
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
            return f"stop none: {ownerless} busy runs have no agent recorded yet", 0
        held = count - len(chosen)
        return f"stop {len(chosen)}" + (f" ({held} busy agents kept)" if held else ""), len(chosen)

    def _report(
        self,
        snapshot: PoolSnapshot,
        agents: list[str],
        standbys: list[Standby],
        decision: Decision,
        action: str,
    ) -> None:
        backlog = snapshot.backlog
        WAITING.set(backlog.waiting)
        RUNNING.set(backlog.running)
        CURRENT.set(len(agents))
        ready = sum(s.ready for s in standbys)
        STANDBY.set(len(standbys))
        STANDBY_READY.set(ready)
        DESIRED.set(decision.desired)
        ONLINE.set(snapshot.online_agents)
        inputs = (backlog, len(agents), ready, snapshot.online_agents, decision.desired, action)
        # Every decision at DEBUG; at INFO, those that differ from the one before.
        level = logging.DEBUG if inputs == self._last_logged and action == "none" else logging.INFO
        self._last_logged = inputs
        logger.log(
            level,
            "waiting=%d running=%d current=%d standby=%d (%d ready) online=%d desired=%d "
            "target=%d action=%s (%s)",
            backlog.waiting,
            backlog.running,
            len(agents),
            len(standbys),
            ready,
            snapshot.online_agents,
            decision.desired,
            decision.target,
            action,
            decision.reason,
        )


MAX_STALE_LABELS = 10_000


class Reconciler:
    """Recovery of runs whose agent died (agent.recovery), against the Prefect API."""

    def __init__(
        self,
        policy: RecoveryPolicy,
        actuator: Actuator,
        client: SyncPrefectClient,
        pool: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.actuator = actuator
        self.client = client
        self.pool = pool
        self.clock = clock
        self.unclaimed: dict[str, float] = {}  # runs seen with no agent -> first seen
        self.crashed_by_us: set[str] = set()  # because their agent (ours) is gone
        self.final: set[str] = set()  # Crashed runs to leave Crashed
        # A crash's history does not change while the run stays Crashed: read it once.
        self.described: dict[tuple[str, datetime], CrashedRun] = {}
        # Rescheduled runs -> the dead agent still on their label until a new one takes them.
        self.stale_labels: dict[str, str | None] = {}

    def interrupted(self) -> None:
        """A poll failed: a run's time without an agent counts only across polls that work
        (an outage of the server is no agent's fault)."""
        self.unclaimed.clear()

    def reconcile(self, snapshot: PoolSnapshot) -> None:
        online = set(snapshot.online_workers)

        def agent_alive(worker: str) -> bool:
            if self.actuator.owner(worker) is not None:
                return True
            # One of ours that is gone is surely dead; another's, only once Prefect sees its
            # heartbeats stop (then the zombie automation has usually crashed its runs).
            return not self.actuator.claims(worker) and worker in online

        busy = without_stale_labels(snapshot.busy_runs, self.stale_labels)
        workers = {run.id: run.worker_name for run in busy}
        for repair in end_orphaned_runs(
            busy, agent_alive, self.unclaimed, self.clock(), self.policy
        ):
            if self._apply(repair) and repair.to == StateType.CRASHED:
                worker = workers[repair.run_id]
                if worker is not None and self.actuator.claims(worker):
                    self.crashed_by_us.add(repair.run_id)

        now = datetime.now(UTC)
        recent = read_crashed_runs(self.client, self.pool, now - LOOKBACK)
        # Memory of runs no longer Crashed (rescheduled, finished, past the look-back) goes.
        still_crashed = {str(run.id) for run in recent}
        self.final &= still_crashed
        self.crashed_by_us &= still_crashed
        self.described = {k: v for k, v in self.described.items() if k[0] in still_crashed}
        crashed_runs = [run for run in recent if str(run.id) not in self.final]
        crashed = [self._describe(run) for run in crashed_runs]
        repairs, final = retry_crashed_runs(crashed, self._beat_since, now, self.policy)
        labels = {str(run.id): run.labels.get(WORKER_LABEL) for run in crashed_runs}
        for run_id in final:
            logger.info(
                "flow run %s stays Crashed (retries used, cancelled or no deployment)", run_id
            )
        self.final.update(final)
        for repair in repairs:
            if self._apply(repair):
                self.stale_labels[repair.run_id] = labels[repair.run_id]
        while len(self.stale_labels) > MAX_STALE_LABELS:  # runs that never came back
            del self.stale_labels[next(iter(self.stale_labels))]

    def _describe(self, run: FlowRun) -> CrashedRun:
        assert run.state is not None  # read_crashed_runs keeps runs with a state
        key = (str(run.id), run.state.timestamp)
        if key not in self.described:
            history = self.client.read_flow_run_states(run.id)
            self.described[key] = CrashedRun(
                id=str(run.id),
                crashed_at=run.state.timestamp,
                crashes=sum(state.type == StateType.CRASHED for state in history),
                cancel_requested=any(state.type == StateType.CANCELLING for state in history),
                has_deployment=run.deployment_id is not None,
                agent_gone=str(run.id) in self.crashed_by_us,
            )
        return self.described[key]

    def _beat_since(self, run: CrashedRun) -> bool:
        """Whether the run has sent a heartbeat since it was marked Crashed: it is alive."""
        page = self.client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=run.crashed_at),
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run.id}"]),
            ),
            limit=1,
        )
        return bool(page.events)

    def _apply(self, repair: Repair) -> bool:
        state = {
            StateType.CRASHED: lambda: Crashed(
                message=f"Recovered by the autoscaler: {repair.reason}"
            ),
            StateType.CANCELLED: lambda: Cancelled(message=f"Cancelled: {repair.reason}"),
            StateType.SCHEDULED: lambda: Scheduled(name="Rescheduled", message=repair.reason),
        }[repair.to]()
        result = self.client.set_flow_run_state(repair.run_id, state)
        accepted = result.status == SetStateStatus.ACCEPT
        if accepted:
            REPAIRS.labels(repair.to.value.lower()).inc()
        logger.log(
            logging.WARNING if accepted else logging.INFO,
            "flow run %s -> %s (%s): %s",
            repair.run_id,
            repair.to.value,
            repair.reason,
            "done" if accepted else f"refused: {result.details}",
        )
        return accepted


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
    # While the server is away, fail a poll fast and try again at the next, rather than
    # retrying inside one poll for a minute. Not through the environment: local agents get
    # ours, and Prefect's worker passes its settings on to runs, over the deployments' own.
    retries = int(os.environ.get("PREFECT_CLIENT_MAX_RETRIES", "1"))
    try:
        with (
            temporary_settings({PREFECT_CLIENT_MAX_RETRIES: retries}),
            get_client(sync_client=True) as client,
        ):
            scaler = Autoscaler(
                policy,
                actuator,
                lambda: read_pool(client, settings.work_pool_name, datetime.now(UTC)),
                reconciler=Reconciler(
                    settings.recovery_policy(), actuator, client, settings.work_pool_name
                )
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
