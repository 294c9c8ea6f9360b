"""Recovery of runs whose agent died, as plain functions: which runs to end, which to retry.

The autoscaler knows which agents exist, so it is the one that can tell a run whose agent is
gone from a run that is merely long. Each poll it

- marks Crashed a Pending or Running run whose agent is gone, and Cancelled a Cancelling
  one (nothing is left to cancel);
- marks Crashed a run left Pending, or Cancelling, by no agent at all for `pending_grace`
  seconds of polls in a row (an agent died between taking the run and labelling it);
- reschedules a Crashed run of a deployment, once it has settled, at most `crash_retries`
  times: whoever crashed it (this reconciler, Prefect's worker, or the server's zombie
  automation when heartbeats stop), the run starts again on a live agent.

A crash is settled once `settle` seconds have passed with no heartbeat from the run (at
once when this reconciler crashed it because its agent is gone): a run that the zombie
automation crashed while its engine was alive (its heartbeats were lost in a server outage)
keeps beating, and ends with its own final state instead of running twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from prefect.client.schemas.objects import StateType

from autoscaler.prefect_api import BusyRun

LOOKBACK = timedelta(hours=1)  # crashed runs older than this are left alone


@dataclass(frozen=True)
class RecoveryPolicy:
    crash_retries: int
    """How many times one run is rescheduled after crashing (0: never)."""
    pending_grace: float
    """Seconds a Pending or Cancelling run may have no agent before it is ended."""
    settle: float
    """Seconds with no heartbeat after a crash before the run is rescheduled."""

    def __post_init__(self) -> None:
        if self.crash_retries < 0 or self.pending_grace < 0 or self.settle < 0:
            raise ValueError("crash_retries, pending_grace and settle must be >= 0")


@dataclass(frozen=True)
class Repair:
    run_id: str
    to: StateType
    reason: str


@dataclass(frozen=True)
class CrashedRun:
    id: str
    crashed_at: datetime
    crashes: int
    """How many times the run has been Crashed, this time included."""
    cancel_requested: bool
    """The run went through Cancelling: whoever cancelled it does not want it again."""
    has_deployment: bool
    agent_gone: bool = False
    """Crashed by this reconciler because its agent is gone: nothing of it can still run."""


def without_stale_labels(busy: Iterable[BusyRun], stale: dict[str, str | None]) -> list[BusyRun]:
    """Busy runs, less the label of the dead agent on runs rescheduled since (`stale`: run id
    -> that label). A new agent labels a run just after taking it (Pending): until then the
    run has no agent. Entries of runs that a new agent has labelled are dropped from `stale`."""
    result = []
    for run in busy:
        if run.id in stale and stale[run.id] == run.worker_name:
            result.append(replace(run, worker_name=None))
            continue
        stale.pop(run.id, None)
        result.append(run)
    return result


def end_orphaned_runs(
    busy: Iterable[BusyRun],
    agent_alive: Callable[[str], bool],
    unclaimed: dict[str, float],
    now: float,
    policy: RecoveryPolicy,
) -> list[Repair]:
    """Repairs for busy runs whose agent is gone. `unclaimed` maps runs seen with no agent to
    when they were first seen so (monotonic seconds); it is updated in place."""
    repairs = []
    seen_unclaimed = set()
    for run in busy:
        if run.worker_name is not None:
            if agent_alive(run.worker_name):
                continue
            reason = f"its agent {run.worker_name} is gone"
        elif run.state in (StateType.PENDING, StateType.CANCELLING):
            seen_unclaimed.add(run.id)
            since = unclaimed.setdefault(run.id, now)
            if now - since < policy.pending_grace:
                continue
            reason = f"{run.state.value.title()} for {now - since:.0f} s and no agent has it"
        else:
            continue  # Running with no agent recorded: the zombie automation watches those
        target = StateType.CANCELLED if run.state == StateType.CANCELLING else StateType.CRASHED
        repairs.append(Repair(run.id, target, reason))
    for run_id in set(unclaimed) - seen_unclaimed:
        del unclaimed[run_id]
    return repairs


def retry_crashed_runs(
    crashed: Iterable[CrashedRun],
    beat_since: Callable[[CrashedRun], bool],
    now: datetime,
    policy: RecoveryPolicy,
) -> tuple[list[Repair], list[str]]:
    """Reschedules for settled crashes within the budget, and the runs to leave Crashed for
    good (over budget, cancelled, or no deployment to run them again)."""
    repairs, final = [], []
    for run in crashed:
        if run.cancel_requested or not run.has_deployment or run.crashes > policy.crash_retries:
            final.append(run.id)
        elif run.agent_gone or (
            (now - run.crashed_at).total_seconds() >= policy.settle and not beat_since(run)
        ):
            reason = f"rescheduled after crash {run.crashes} of {policy.crash_retries} allowed"
            repairs.append(Repair(run.id, StateType.SCHEDULED, reason))
    return repairs, final
