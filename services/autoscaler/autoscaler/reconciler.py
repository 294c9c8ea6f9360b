"""The reconciler: recovery of runs whose agent died (the rules are autoscaler.recovery's
plain functions), carried out against the Prefect API (autoscaler.prefect_api) once per poll.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from prefect.client.schemas.objects import StateType

from autoscaler.actuators import Actuator
from autoscaler.metrics import REPAIRS
from autoscaler.prefect_api import CrashedFlowRun, PoolApi, PoolSnapshot
from autoscaler.recovery import (
    LOOKBACK,
    CrashedRun,
    RecoveryPolicy,
    Repair,
    end_orphaned_runs,
    retry_crashed_runs,
    without_stale_labels,
)

logger = logging.getLogger("autoscaler")

MAX_STALE_LABELS = 10_000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Reconciler:
    """Recovery of runs whose agent died (autoscaler.recovery), against the Prefect API."""

    def __init__(
        self,
        policy: RecoveryPolicy,
        actuator: Actuator,
        prefect: PoolApi,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.policy = policy
        self.actuator = actuator
        self.prefect = prefect
        self.clock = clock
        self.now = now
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

        now = self.now()
        recent = self.prefect.read_crashed_runs(now - LOOKBACK)
        # Memory of runs no longer Crashed (rescheduled, finished, past the look-back) goes.
        still_crashed = {run.id for run in recent}
        self.final &= still_crashed
        self.crashed_by_us &= still_crashed
        self.described = {k: v for k, v in self.described.items() if k[0] in still_crashed}
        crashed_runs = [run for run in recent if run.id not in self.final]
        crashed = [self._describe(run) for run in crashed_runs]
        repairs, final = retry_crashed_runs(crashed, self._beat_since, now, self.policy)
        labels = {run.id: run.worker_name for run in crashed_runs}
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

    def _describe(self, run: CrashedFlowRun) -> CrashedRun:
        key = (run.id, run.crashed_at)
        if key not in self.described:
            history = self.prefect.read_state_history(run.id)
            self.described[key] = CrashedRun(
                id=run.id,
                crashed_at=run.crashed_at,
                crashes=history.count(StateType.CRASHED),
                cancel_requested=StateType.CANCELLING in history,
                has_deployment=run.has_deployment,
                agent_gone=run.id in self.crashed_by_us,
            )
        return self.described[key]

    def _beat_since(self, run: CrashedRun) -> bool:
        """Whether the run has sent a heartbeat since it was marked Crashed: it is alive."""
        return self.prefect.heartbeat_since(run.id, run.crashed_at)

    def _apply(self, repair: Repair) -> bool:
        change = self.prefect.set_state(repair.run_id, repair.to, repair.reason)
        if change.accepted:
            REPAIRS.labels(repair.to.value.lower()).inc()
        logger.log(
            logging.WARNING if change.accepted else logging.INFO,
            "flow run %s -> %s (%s): %s",
            repair.run_id,
            repair.to.value,
            repair.reason,
            "done" if change.accepted else f"refused: {change.details}",
        )
        return change.accepted
