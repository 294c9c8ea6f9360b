"""The reconciler (autoscaler.reconciler) against a fake of the Prefect API: what it changes
for each run it sees, poll after poll. (The rules alone: tests/unit/test_recovery.py; the
real API: tests/faults.)"""

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.schemas.objects import StateType

from autoscaler.metrics import REPAIRS
from autoscaler.prefect_api import BusyRun, CrashedFlowRun, PoolSnapshot, StateChange
from autoscaler.reconciler import Reconciler
from autoscaler.recovery import RecoveryPolicy
from autoscaler.scaling import Backlog

POLICY = RecoveryPolicy(crash_retries=1, pending_grace=60, settle=45)
START = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
CRASHED, SCHEDULED = StateType.CRASHED, StateType.SCHEDULED


@dataclass
class FakeRun:
    states: list[tuple[StateType, datetime]]
    worker_name: str | None = None
    has_deployment: bool = True


@dataclass
class FakePrefect:
    """The pool's runs as the server would keep them: accepted state changes are applied."""

    now: datetime = START
    runs: dict[str, FakeRun] = field(default_factory=dict)
    beating: set[str] = field(default_factory=set)  # runs that send heartbeats
    refusing: set[str] = field(default_factory=set)  # runs whose changes the server refuses
    changes: list[tuple[str, StateType, str]] = field(default_factory=list)
    history_reads: list[str] = field(default_factory=list)
    heartbeat_reads: list[str] = field(default_factory=list)

    def add(self, run_id: str, *states: StateType, **fields: object) -> None:
        self.runs[run_id] = FakeRun([(s, self.now) for s in states], **fields)  # type: ignore[arg-type]

    def read_pool(self, now: datetime) -> PoolSnapshot:
        raise AssertionError("the loop reads the pool; the reconciler is given the snapshot")

    def read_crashed_runs(self, since: datetime) -> list[CrashedFlowRun]:
        return [
            CrashedFlowRun(run_id, run.states[-1][1], run.worker_name, run.has_deployment)
            for run_id, run in self.runs.items()
            if run.states[-1][0] == CRASHED and run.states[-1][1] >= since
        ]

    def read_state_history(self, run_id: str) -> list[StateType]:
        self.history_reads.append(run_id)
        return [state for state, _ in self.runs[run_id].states]

    def heartbeat_since(self, run_id: str, since: datetime) -> bool:
        self.heartbeat_reads.append(run_id)
        return run_id in self.beating

    def set_state(self, run_id: str, to: StateType, reason: str) -> StateChange:
        if run_id in self.refusing:
            return StateChange(False, "the run is already final")
        self.changes.append((run_id, to, reason))
        self.runs.setdefault(run_id, FakeRun([])).states.append((to, self.now))
        return StateChange(True, "")


class Agents:
    """Our agents: `live` ones own their runs; any `ours-*` name is one of ours."""

    acts = True

    def __init__(self, *live: str) -> None:
        self.live = set(live)

    def owner(self, worker_name: str) -> str | None:
        return worker_name if worker_name in self.live else None

    def claims(self, worker_name: str) -> bool:
        return worker_name.startswith("ours-")


class Poller:
    """A reconciler with a fake API, and both its clocks under the test's hand."""

    def __init__(self, *live: str, policy: RecoveryPolicy = POLICY) -> None:
        self.prefect = FakePrefect()
        self.agents = Agents(*live)
        self.seconds = 0.0
        self.reconciler = Reconciler(
            policy,
            self.agents,  # type: ignore[arg-type]
            self.prefect,
            clock=lambda: self.seconds,
            now=lambda: self.prefect.now,
        )

    def poll(self, *busy: BusyRun, online: tuple[str, ...] = (), after: float = 0) -> list:
        """One poll `after` seconds from the last; returns the state changes it made."""
        self.seconds += after
        self.prefect.now += timedelta(seconds=after)
        before = len(self.prefect.changes)
        snapshot = PoolSnapshot(Backlog(0, len(busy)), list(busy), online_workers=list(online))
        self.reconciler.reconcile(snapshot)
        return [(run_id, to) for run_id, to, _ in self.prefect.changes[before:]]


def running(run_id: str, worker: str | None) -> BusyRun:
    return BusyRun(run_id, StateType.RUNNING, worker)


def test_runs_of_live_agents_are_left_alone() -> None:
    poller = Poller("ours-1")
    poller.prefect.add("r", StateType.PENDING, StateType.RUNNING, worker_name="ours-1")
    assert poller.poll(running("r", "ours-1"), online=("ours-1",)) == []
    assert poller.prefect.history_reads == [] and poller.prefect.heartbeat_reads == []


def test_a_run_of_our_dead_agent_is_crashed_then_rescheduled_without_waiting_to_settle() -> None:
    poller = Poller("ours-1")
    poller.prefect.add("r", StateType.RUNNING, worker_name="ours-2")
    crashed_before = REPAIRS.labels("crashed")._value.get()
    # Still online for Prefect (its last heartbeats are recent): ours, so surely dead; and
    # in the same poll, long before a crash settles, rescheduled: nothing of it can still run.
    busy = running("r", "ours-2")
    assert poller.poll(busy, online=("ours-2",)) == [("r", CRASHED), ("r", SCHEDULED)]
    assert [reason for *_, reason in poller.prefect.changes] == [
        "its agent ours-2 is gone",
        "rescheduled after crash 1 of 1 allowed",
    ]
    assert poller.prefect.heartbeat_reads == []
    assert REPAIRS.labels("crashed")._value.get() == crashed_before + 1


def test_a_rescheduled_run_still_labelled_by_its_dead_agent_waits_for_a_new_one() -> None:
    poller = Poller("ours-1")
    poller.prefect.add("r", StateType.RUNNING, worker_name="ours-2")
    # Crashed and rescheduled; the dead agent's label stays until a new agent labels it.
    assert poller.poll(running("r", "ours-2")) == [("r", CRASHED), ("r", SCHEDULED)]
    taken = BusyRun("r", StateType.PENDING, "ours-2")
    assert poller.poll(taken, after=1) == []  # not crashed again: it has no agent yet
    assert poller.poll(taken, after=59) == []
    assert poller.poll(taken, after=1) == [("r", CRASHED)]  # no agent took it in the grace


def test_a_cancelling_run_of_a_dead_agent_is_cancelled_and_not_rescheduled() -> None:
    poller = Poller()
    poller.prefect.add("c", StateType.RUNNING, StateType.CANCELLING, worker_name="ours-2")
    assert poller.poll(BusyRun("c", StateType.CANCELLING, "ours-2")) == [("c", StateType.CANCELLED)]
    assert poller.poll(after=60) == []


def test_another_s_agent_is_alive_while_prefect_sees_it_online() -> None:
    poller = Poller()
    poller.prefect.add("r", StateType.RUNNING, worker_name="k8s-agent-1")
    assert poller.poll(running("r", "k8s-agent-1"), online=("k8s-agent-1",)) == []
    assert poller.poll(running("r", "k8s-agent-1"), online=()) == [("r", CRASHED)]
    # Not ours: whether its engine is gone is not known, so the crash waits to settle.
    assert poller.poll(after=44) == []
    assert poller.prefect.heartbeat_reads == []
    assert poller.poll(after=1) == [("r", SCHEDULED)]
    assert poller.prefect.heartbeat_reads == ["r"]


def test_a_pending_run_without_agent_is_crashed_after_the_grace_of_polls_that_work() -> None:
    poller = Poller("ours-1")
    pending = BusyRun("p", StateType.PENDING, None)
    poller.prefect.add("p", StateType.PENDING)
    assert poller.poll(pending) == []
    assert poller.poll(pending, after=59) == []
    poller.reconciler.interrupted()  # a failed poll: the server was away
    assert poller.poll(pending, after=30) == []  # the count starts again
    assert poller.poll(pending, after=59) == []
    assert poller.poll(pending, after=1) == [("p", CRASHED)]
    assert poller.prefect.changes[0][2] == "Pending for 60 s and no agent has it"


def test_a_running_run_with_no_agent_recorded_is_left_to_prefect() -> None:
    poller = Poller()
    poller.prefect.add("r", StateType.RUNNING)
    assert poller.poll(running("r", None), after=600) == []
    assert poller.poll(running("r", None), after=600) == []


def test_a_crash_that_still_beats_is_left_to_finish() -> None:
    poller = Poller()
    # Crashed by the zombie automation while the server was away; its engine runs on.
    poller.prefect.add("z", StateType.RUNNING, CRASHED, worker_name="ours-1")
    poller.prefect.beating.add("z")
    assert poller.poll(after=0) == []  # not settled: no heartbeat asked for yet
    assert poller.prefect.heartbeat_reads == []
    assert poller.poll(after=45) == []
    assert poller.prefect.heartbeat_reads == ["z"]
    poller.prefect.beating.clear()  # it has really died
    assert poller.poll(after=5) == [("z", SCHEDULED)]


def test_crashes_over_budget_cancelled_or_without_deployment_stay_crashed_read_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="autoscaler")
    poller = Poller()
    prefect = poller.prefect
    prefect.add("twice", CRASHED, SCHEDULED, StateType.RUNNING, CRASHED)
    prefect.add("cancelled", StateType.RUNNING, StateType.CANCELLING, CRASHED)
    prefect.add("adhoc", StateType.RUNNING, CRASHED, has_deployment=False)
    assert poller.poll(after=100) == []
    assert poller.poll(after=100) == []
    assert sorted(prefect.history_reads) == ["adhoc", "cancelled", "twice"]
    said = [r.getMessage().split()[2] for r in caplog.records if "stays Crashed" in r.message]
    assert sorted(said) == ["adhoc", "cancelled", "twice"]  # once each, at the first poll
    assert prefect.heartbeat_reads == []


def test_a_run_that_crashes_again_after_its_retry_stays_crashed() -> None:
    poller = Poller()
    poller.prefect.add("r", StateType.RUNNING, worker_name="ours-2")
    assert poller.poll(running("r", "ours-2")) == [("r", CRASHED), ("r", SCHEDULED)]
    # A new agent runs it, and it crashes again, a minute later.
    later = poller.prefect.now + timedelta(seconds=60)
    poller.prefect.runs["r"].states += [(StateType.RUNNING, later), (CRASHED, later)]
    assert poller.poll(after=100) == []  # crash 2 of 1 allowed: its history is read anew
    assert poller.prefect.history_reads == ["r", "r"]


def test_a_refused_change_counts_for_nothing() -> None:
    poller = Poller()
    poller.prefect.add("r", StateType.RUNNING, worker_name="ours-2")
    poller.prefect.refusing.add("r")
    crashed_before = REPAIRS.labels("crashed")._value.get()
    assert poller.poll(running("r", "ours-2")) == []
    assert REPAIRS.labels("crashed")._value.get() == crashed_before
    # Crashed by someone else meanwhile: not known to be ours, so it waits to settle.
    poller.prefect.refusing.clear()
    poller.prefect.runs["r"].states.append((CRASHED, poller.prefect.now))
    assert poller.poll(after=1) == []
    assert poller.poll(after=45) == [("r", SCHEDULED)]
