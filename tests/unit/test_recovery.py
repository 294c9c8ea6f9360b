"""Recovery of runs whose agent died (autoscaler.recovery): which runs to end, which to retry."""

from datetime import UTC, datetime, timedelta

import pytest
from prefect.client.schemas.objects import StateType

from autoscaler.prefect_api import BusyRun
from autoscaler.recovery import (
    CrashedRun,
    RecoveryPolicy,
    end_orphaned_runs,
    retry_crashed_runs,
    without_stale_labels,
)

POLICY = RecoveryPolicy(crash_retries=1, pending_grace=60, settle=45)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _alive(*names: str):
    return lambda worker: worker in names


def test_runs_of_a_dead_agent_are_crashed_and_its_cancelling_runs_cancelled() -> None:
    busy = [
        BusyRun("r1", StateType.RUNNING, "dead"),
        BusyRun("r2", StateType.PENDING, "dead"),
        BusyRun("r3", StateType.CANCELLING, "dead"),
        BusyRun("r4", StateType.RUNNING, "alive"),
    ]
    repairs = end_orphaned_runs(busy, _alive("alive"), {}, 0.0, POLICY)
    assert [(r.run_id, r.to) for r in repairs] == [
        ("r1", StateType.CRASHED),
        ("r2", StateType.CRASHED),
        ("r3", StateType.CANCELLED),
    ]
    assert "its agent dead is gone" in repairs[0].reason


def test_a_pending_run_no_agent_took_is_ended_after_the_grace_of_consecutive_polls() -> None:
    unclaimed: dict[str, float] = {}
    pending = [BusyRun("p", StateType.PENDING, None), BusyRun("r", StateType.RUNNING, None)]
    assert end_orphaned_runs(pending, _alive(), unclaimed, 100.0, POLICY) == []
    assert end_orphaned_runs(pending, _alive(), unclaimed, 159.0, POLICY) == []
    [repair] = end_orphaned_runs(pending, _alive(), unclaimed, 160.0, POLICY)
    assert (repair.run_id, repair.to) == ("p", StateType.CRASHED)
    assert "Pending for 60 s and no agent has it" in repair.reason
    # Running with no agent recorded is left to the heartbeat automation.
    assert list(unclaimed) == ["p"]


def test_a_run_that_an_agent_takes_in_time_is_forgotten() -> None:
    unclaimed: dict[str, float] = {}
    end_orphaned_runs([BusyRun("p", StateType.PENDING, None)], _alive(), unclaimed, 0, POLICY)
    taken = [BusyRun("p", StateType.RUNNING, "a1")]
    assert end_orphaned_runs(taken, _alive("a1"), unclaimed, 100, POLICY) == []
    assert unclaimed == {}


def _crashed(seconds_ago: float, crashes: int = 1, **fields: object) -> CrashedRun:
    defaults = {"cancel_requested": False, "has_deployment": True, "agent_gone": False}
    return CrashedRun("c", NOW - timedelta(seconds=seconds_ago), crashes, **{**defaults, **fields})


def test_a_settled_crash_is_rescheduled_within_the_budget() -> None:
    repairs, final = retry_crashed_runs([_crashed(50)], lambda run: False, NOW, POLICY)
    assert [(r.run_id, r.to) for r in repairs] == [("c", StateType.SCHEDULED)]
    assert repairs[0].reason == "rescheduled after crash 1 of 1 allowed"
    assert final == []


def test_a_crash_waits_to_settle_unless_its_agent_is_known_gone() -> None:
    assert retry_crashed_runs([_crashed(10)], lambda run: False, NOW, POLICY) == ([], [])
    repairs, _ = retry_crashed_runs([_crashed(1, agent_gone=True)], lambda r: 1 / 0, NOW, POLICY)
    assert [r.to for r in repairs] == [StateType.SCHEDULED]


def test_a_crashed_run_that_still_beats_is_left_to_finish() -> None:
    assert retry_crashed_runs([_crashed(300)], lambda run: True, NOW, POLICY) == ([], [])


@pytest.mark.parametrize(
    "fields",
    [{"crashes": 2}, {"cancel_requested": True}, {"has_deployment": False}],
    ids=["budget-used", "cancelled", "no-deployment"],
)
def test_crashes_beyond_the_budget_or_cancelled_stay_crashed(fields: dict) -> None:
    repairs, final = retry_crashed_runs([_crashed(300, **fields)], lambda r: False, NOW, POLICY)
    assert (repairs, final) == ([], ["c"])


def test_a_budget_of_zero_never_reschedules() -> None:
    policy = RecoveryPolicy(crash_retries=0, pending_grace=60, settle=45)
    assert retry_crashed_runs([_crashed(300)], lambda r: False, NOW, policy) == ([], ["c"])


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        RecoveryPolicy(crash_retries=-1, pending_grace=60, settle=45)


def test_a_rescheduled_run_has_no_agent_until_a_new_one_labels_it() -> None:
    stale: dict[str, str | None] = {"r": "dead"}
    pending = [BusyRun("r", StateType.PENDING, "dead"), BusyRun("o", StateType.RUNNING, "a1")]
    assert [run.worker_name for run in without_stale_labels(pending, stale)] == [None, "a1"]
    assert stale == {"r": "dead"}  # still waiting for its new agent's label
    relabelled = [BusyRun("r", StateType.RUNNING, "a2")]
    assert without_stale_labels(relabelled, stale) == relabelled
    assert stale == {}
