"""The autoscaling policy: bursts, flapping, cooldowns, bounds, and which agents may stop."""

import pytest

from autoscaler.scaling import (
    Backlog,
    ScalerMemory,
    ScalingPolicy,
    agents_to_stop,
    decide,
    desired_agents,
    scale_up_plan,
    standby_change,
    standby_target,
)

POLICY = ScalingPolicy(min_agents=1, max_agents=5, runs_per_agent=2, scale_down_cooldown=60)


def run(policy, steps, current=1, start=0.0):
    """Apply (seconds_later, waiting, running) steps, moving to each target; the targets."""
    memory, now, targets = ScalerMemory(), start, []
    for later, waiting, running in steps:
        now += later
        decision = decide(policy, Backlog(waiting, running), current, memory, now)
        memory, current = decision.memory, decision.target
        targets.append(current)
    return targets


@pytest.mark.parametrize(
    ("waiting", "running", "expected"),
    [(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 2), (2, 2, 2), (5, 4, 5), (100, 0, 5), (0, 9, 5)],
)
def test_desired_is_the_clamped_ceiling(waiting: int, running: int, expected: int) -> None:
    assert desired_agents(POLICY, Backlog(waiting, running)) == expected


def test_a_burst_scales_up_at_once_to_the_maximum() -> None:
    decision = decide(POLICY, Backlog(waiting=20, running=0), 1, ScalerMemory(), now=0)
    assert (decision.desired, decision.target, decision.change(1)) == (5, 5, 4)


def test_scale_down_waits_for_the_whole_cooldown() -> None:
    # 5 agents busy, then the backlog drains to 1 running run: 1 agent is enough.
    targets = run(POLICY, [(0, 0, 10), (5, 0, 1), (30, 0, 1), (29, 0, 1), (1, 0, 1)], current=5)
    assert targets == [5, 5, 5, 5, 1]


def test_flapping_backlog_restarts_the_cooldown() -> None:
    # Low for 50 s, a burst for one poll, low again: the cooldown counts from the burst.
    steps = [(0, 0, 2), (50, 0, 10), (5, 0, 2), (55, 0, 2), (5, 0, 2)]
    assert run(POLICY, steps, current=5) == [5, 5, 5, 5, 1]


def test_no_scale_down_while_runs_wait_to_start() -> None:
    # Desired (3) is below current (5) after the cooldown, but 1 run waits: an idle agent
    # is about to take it.
    memory = ScalerMemory(below_since=0)
    decision = decide(POLICY, Backlog(waiting=1, running=4), 5, memory, now=1000)
    assert (decision.desired, decision.target) == (3, 5)
    assert "waiting" in decision.reason
    ready = decide(POLICY, Backlog(waiting=0, running=5), 5, memory, now=1000)
    assert (ready.desired, ready.target) == (3, 3)


def test_scale_up_cooldown_spaces_scale_ups() -> None:
    policy = ScalingPolicy(1, 8, 1, scale_down_cooldown=60, scale_up_cooldown=10)
    targets = run(policy, [(0, 3, 0), (5, 6, 0), (5, 6, 0), (1, 8, 0)])
    assert targets == [3, 3, 6, 6]


def test_bounds_hold_whatever_the_backlog() -> None:
    # Below the minimum (an agent died): back up at once, cooldowns or not.
    policy = ScalingPolicy(2, 3, 1, scale_down_cooldown=60, scale_up_cooldown=999)
    memory = ScalerMemory(last_scale_up=0)
    assert decide(policy, Backlog(0, 0), 0, memory, now=1).target == 2
    # Above the maximum (someone scaled by hand): down to it, without the cooldown.
    assert decide(policy, Backlog(0, 10), 6, ScalerMemory(), now=0).target == 3
    # Never below the minimum, never above the maximum.
    assert run(policy, [(0, 0, 0), (100, 0, 0)], current=2) == [2, 2]
    assert run(policy, [(0, 50, 0)], current=2) == [3]


def test_scale_to_zero_when_the_minimum_is_zero() -> None:
    policy = ScalingPolicy(0, 2, 1, scale_down_cooldown=0)
    assert run(policy, [(0, 0, 0), (1, 1, 0), (1, 0, 1), (1, 0, 0)], current=1) == [0, 1, 1, 0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_agents": -1},
        {"min_agents": 3, "max_agents": 2},
        {"max_agents": 0, "min_agents": 0},
        {"runs_per_agent": 0},
        {"scale_down_cooldown": -1},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict) -> None:
    values = {"min_agents": 1, "max_agents": 4, "runs_per_agent": 1, "scale_down_cooldown": 0}
    with pytest.raises(ValueError):
        ScalingPolicy(**{**values, **kwargs})


def test_only_idle_agents_stop_newest_first() -> None:
    agents = ["a1", "a2", "a3", "a4"]  # oldest first
    assert agents_to_stop(agents, busy={"a4"}, count=2) == ["a3", "a2"]
    assert agents_to_stop(agents, busy={"a1", "a2", "a3"}, count=3) == ["a4"]
    assert agents_to_stop(agents, busy=set(agents), count=4) == []
    assert agents_to_stop(agents, busy=set(), count=0) == []


def test_no_agent_stops_while_a_busy_run_has_no_known_agent() -> None:
    assert agents_to_stop(["a1", "a2"], busy=set(), count=1, ownerless_runs=1) == []


def test_standby_agents_never_exceed_what_the_maximum_leaves_room_for() -> None:
    policy = ScalingPolicy(1, 4, 2, 60, standby_agents=3)
    assert [standby_target(policy, current) for current in (0, 1, 2, 3, 4, 5)] == [3, 3, 2, 1, 0, 0]
    assert standby_target(ScalingPolicy(1, 4, 2, 60), 1) == 0  # none by choice


def test_standby_agents_start_one_at_a_time_and_only_while_the_pool_is_calm() -> None:
    policy = ScalingPolicy(1, 4, 2, 60, standby_agents=3)

    def change(backlog: Backlog, current: int, standbys: int, online: int | None = None) -> int:
        online = current if online is None else online
        return standby_change(policy, backlog, current, standbys, online=online)

    assert change(Backlog(0, 0), current=1, standbys=0) == 1
    assert change(Backlog(0, 2), current=1, standbys=2) == 1  # busy, not short
    # A run waits, or agents are missing: their imports would compete with the runs.
    assert change(Backlog(1, 0), current=1, standbys=0) == 0
    assert change(Backlog(0, 4), current=1, standbys=0) == 0
    assert change(Backlog(0, 0), current=1, standbys=3) == 0
    # An agent still starting (the first one, at start-up): not before it is online.
    assert change(Backlog(0, 0), current=1, standbys=0, online=0) == 0
    assert change(Backlog(0, 0), current=2, standbys=0, online=1) == 0
    # Beyond the target (agents were added): the extra standby agents stop, calm or not.
    assert change(Backlog(5, 0), current=3, standbys=3) == -2
    assert change(Backlog(0, 0), current=3, standbys=3, online=0) == -2


def test_a_scale_up_promotes_standby_agents_before_starting_cold_ones() -> None:
    assert scale_up_plan(3, ["s1", "s2"]) == (["s1", "s2"], 1)
    assert scale_up_plan(1, ["s1", "s2"]) == (["s1"], 0)
    assert scale_up_plan(2, []) == ([], 2)
    assert scale_up_plan(0, ["s1"]) == ([], 0)


def test_a_negative_standby_count_is_refused() -> None:
    with pytest.raises(ValueError, match="standby_agents"):
        ScalingPolicy(1, 4, 2, 60, standby_agents=-1)
