"""The autoscaler's loop: keep the number of agents in step with the pool's backlog.

Every poll it reads the pool from the Prefect API (autoscaler.prefect_api), asks the policy
(autoscaler.scaling) for a target, and starts or stops agents through an actuator
(autoscaler.actuators): Compose containers, or local processes. It logs each decision with
its inputs and serves them as Prometheus gauges on /metrics (autoscaler.metrics), for
dashboards or KEDA; then it has the reconciler (autoscaler.reconciler) recover the runs of
dead agents.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from autoscaler.actuators import Actuator, Standby
from autoscaler.metrics import (
    CURRENT,
    DESIRED,
    ERRORS,
    ONLINE,
    PROMOTED,
    RUNNING,
    STANDBY,
    STANDBY_READY,
    STARTED,
    STOPPED,
    WAITING,
)
from autoscaler.prefect_api import PoolSnapshot
from autoscaler.reconciler import Reconciler
from autoscaler.scaling import (
    Decision,
    ScalerMemory,
    ScalingPolicy,
    agents_to_stop,
    decide,
    scale_up_plan,
    standby_change,
)

logger = logging.getLogger("autoscaler")


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
        # Our agents the server sees online: not the workers of a stack before a restart,
        # which stay online for a while, nor agents we do not run.
        online = sum(self.actuator.owner(w) is not None for w in snapshot.online_workers)
        change = standby_change(self.policy, snapshot.backlog, agents, len(standbys), online=online)
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
