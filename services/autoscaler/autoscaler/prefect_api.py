"""Read what the autoscaler needs from the Prefect API: the pool's backlog, its busy runs and
its online agents. One snapshot per poll, three requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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
from prefect.client.schemas.objects import FlowRun, StateType, WorkerStatus
from prefect.client.schemas.sorting import FlowRunSort

from agent.scaling import Backlog

# Runs that hold an agent: a Pending run has been picked up and is starting.
BUSY_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
# Set by Prefect's worker on each run it submits (BaseWorker._give_worker_labels_to_flow_run).
WORKER_LABEL = "prefect.worker.name"
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


def read_pool(client: SyncPrefectClient, pool: str, now: datetime) -> PoolSnapshot:
    """The pool's state at `now` (timezone-aware)."""
    in_pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool]))
    # Scheduled covers Late and AwaitingRetry too (same state type); only those due count.
    due = client.count_flow_runs(
        work_pool_filter=in_pool,
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
            next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(before_=now),
        ),
    )
    busy = _busy_runs(client, in_pool)
    pending = sum(run.state == StateType.PENDING for run in busy)
    online = client.read_workers_for_work_pool(
        pool, worker_filter=WorkerFilter(status=WorkerFilterStatus(any_=[WorkerStatus.ONLINE]))
    )
    return PoolSnapshot(
        backlog=Backlog(waiting=due + pending, running=len(busy) - pending),
        busy_runs=busy,
        online_workers=[worker.name for worker in online],
    )


def _busy_runs(client: SyncPrefectClient, in_pool: WorkPoolFilter) -> list[BusyRun]:
    busy_filter = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=BUSY_STATES))
    )
    runs: list[BusyRun] = []
    for page in range(MAX_PAGES):
        batch = client.read_flow_runs(
            work_pool_filter=in_pool, flow_run_filter=busy_filter, limit=PAGE, offset=page * PAGE
        )
        runs += [
            BusyRun(str(run.id), run.state.type, run.labels.get(WORKER_LABEL))
            for run in batch
            if run.state is not None
        ]
        if len(batch) < PAGE:
            break
    return runs


def read_crashed_runs(client: SyncPrefectClient, pool: str, since: datetime) -> list[FlowRun]:
    """The pool's Crashed runs that crashed after `since`, newest first (one page)."""
    runs = client.read_flow_runs(
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED]))
        ),
        sort=FlowRunSort.END_TIME_DESC,
        limit=PAGE,
    )
    return [run for run in runs if run.state is not None and run.state.timestamp >= since]
