"""Every call the autoscaler makes to the Prefect API, through `PrefectPool`: each poll, one
snapshot of the pool (its backlog, its busy runs and its online agents: three requests);
for recovery, its Crashed runs, a run's state history and heartbeats, and state changes.

The loop and the reconciler see only the plain shapes defined here, so that tests give
them a fake of it (`PoolApi`: tests/unit/test_reconciler.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkerFilter,
    WorkerFilterStatus,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, State, StateType, WorkerStatus
from prefect.client.schemas.responses import SetStateStatus
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events.filters import (
    EventFilter,
    EventNameFilter,
    EventOccurredFilter,
    EventResourceFilter,
)
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings
from prefect.states import Cancelled, Crashed, Scheduled

from autoscaler.scaling import Backlog

# Runs that hold an agent: a Pending run has been picked up and is starting.
BUSY_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
# Set by Prefect's worker on each run it submits (BaseWorker._give_worker_labels_to_flow_run).
WORKER_LABEL = "prefect.worker.name"


def worker_name(run: FlowRun) -> str | None:
    """The name in the run's WORKER_LABEL (labels are typed as any JSON scalar)."""
    name = run.labels.get(WORKER_LABEL)
    return None if name is None else str(name)


PAGE = 200
MAX_PAGES = 50  # 10,000 busy runs: far beyond what one pool's agents run at once


@dataclass(frozen=True)
class BusyRun:
    id: str
    state: StateType
    worker_name: str | None
    """The agent (Prefect worker) that took the run: it labels the run as it submits it."""


@dataclass(frozen=True)
class PoolSnapshot:
    backlog: Backlog
    busy_runs: list[BusyRun]
    online_workers: list[str]
    """Names of the pool's workers that the server sees online (heartbeats)."""

    @property
    def online_agents(self) -> int:
        return len(self.online_workers)


@dataclass(frozen=True)
class CrashedFlowRun:
    id: str
    crashed_at: datetime
    """When it entered its Crashed state (timezone-aware)."""
    worker_name: str | None
    """The agent that had it last (its label), or None."""
    has_deployment: bool


@dataclass(frozen=True)
class StateChange:
    accepted: bool
    details: str
    """Why the server refused it, when it did."""


class PoolApi(Protocol):
    """What the autoscaler asks of the Prefect API about one pool; `PrefectPool` asks it."""

    def read_pool(self, now: datetime) -> PoolSnapshot: ...

    def read_crashed_runs(self, since: datetime) -> list[CrashedFlowRun]: ...

    def read_state_history(self, run_id: str) -> list[StateType]: ...

    def heartbeat_since(self, run_id: str, since: datetime) -> bool: ...

    def set_state(self, run_id: str, to: StateType, reason: str) -> StateChange: ...


@contextmanager
def connect(max_retries: int) -> Iterator[SyncPrefectClient]:
    """A client that retries a failed call `max_retries` times, for the autoscaler's life.

    While the server is away, a poll should fail fast and the next one try again, rather
    than retry inside one poll for a minute. Not set through the environment: local agents
    get ours, and Prefect's worker passes its settings on to runs, over the deployments' own.
    """
    with (
        temporary_settings({PREFECT_CLIENT_MAX_RETRIES: max_retries}),
        get_client(sync_client=True) as client,
    ):
        yield client


class PrefectPool:
    """The Prefect API, as it concerns the work pool `pool`."""

    def __init__(self, client: SyncPrefectClient, pool: str) -> None:
        self.client = client
        self.pool = pool
        self._in_pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))

    def read_pool(self, now: datetime) -> PoolSnapshot:
        """The pool's state at `now` (timezone-aware)."""
        # Scheduled covers Late and AwaitingRetry too (same state type); only those due count.
        due = self.client.count_flow_runs(
            work_pool_filter=self._in_pool,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=now),
            ),
        )
        busy = self._busy_runs()
        pending = sum(run.state == StateType.PENDING for run in busy)
        online = self.client.read_workers_for_work_pool(
            self.pool,
            worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=[WorkerStatus.ONLINE])),
        )
        return PoolSnapshot(
            backlog=Backlog(waiting=due + pending, running=len(busy) - pending),
            busy_runs=busy,
            online_workers=[worker.name for worker in online],
        )

    def _busy_runs(self) -> list[BusyRun]:
        busy_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=BUSY_STATES))
        )
        runs: list[BusyRun] = []
        for page in range(MAX_PAGES):
            batch = self.client.read_flow_runs(
                work_pool_filter=self._in_pool,
                flow_run_filter=busy_filter,
                limit=PAGE,
                offset=page * PAGE,
            )
            runs += [
                BusyRun(str(run.id), run.state.type, worker_name(run))
                for run in batch
                if run.state is not None
            ]
            if len(batch) < PAGE:
                break
        return runs

    def read_crashed_runs(self, since: datetime) -> list[CrashedFlowRun]:
        """The pool's Crashed runs that crashed after `since`, newest first (one page)."""
        runs = self.client.read_flow_runs(
            work_pool_filter=self._in_pool,
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))
            ),
            sort=FlowRunSort.END_TIME_DESC,
            limit=PAGE,
        )
        return [
            CrashedFlowRun(
                id=str(run.id),
                crashed_at=run.state.timestamp,
                worker_name=worker_name(run),
                has_deployment=run.deployment_id is not None,
            )
            for run in runs
            if run.state is not None and run.state.timestamp >= since
        ]

    def read_state_history(self, run_id: str) -> list[StateType]:
        """The types of every state the run has been in, oldest first."""
        return [state.type for state in self.client.read_flow_run_states(UUID(run_id))]

    def heartbeat_since(self, run_id: str, since: datetime) -> bool:
        """Whether the run has sent a heartbeat since `since`: its engine is alive."""
        page = self.client.read_events(
            EventFilter(
                occurred=EventOccurredFilter(since=since),
                event=EventNameFilter(name=["prefect.flow-run.heartbeat"]),
                resource=EventResourceFilter(id=[f"prefect.flow-run.{run_id}"]),
            ),
            limit=1,
        )
        return bool(page.events)

    def set_state(self, run_id: str, to: StateType, reason: str) -> StateChange:
        """Move the run to Crashed, Cancelled or Scheduled (Rescheduled), saying why."""
        state: State = {
            StateType.CRASHED: lambda: Crashed(message=f"Recovered by the autoscaler: {reason}"),
            StateType.CANCELLED: lambda: Cancelled(message=f"Cancelled: {reason}"),
            StateType.SCHEDULED: lambda: Scheduled(name="Rescheduled", message=reason),
        }[to]()
        result = self.client.set_flow_run_state(run_id, state)
        return StateChange(result.status == SetStateStatus.ACCEPT, str(result.details))
