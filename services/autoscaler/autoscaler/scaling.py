"""The autoscaling policy, as plain functions: how many agents the backlog needs, when to
change the count, and which agents may be stopped.

    desired = clamp(ceil((waiting + running) / runs_per_agent), min_agents, max_agents)

Scale-up is immediate. Scale-down waits until the demand has stayed below the current count
for the whole cooldown (a burst in between restarts the wait), never happens while runs wait
to be picked up, and only ever stops agents that run nothing.

Standby agents are started ahead of need and wait, warm, without polling: a scale-up
promotes them first, and starts cold agents only for the rest. They are replaced only while
the pool is calm, so that their imports never compete with runs for the CPU during a burst.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ScalingPolicy:
    min_agents: int
    max_agents: int
    runs_per_agent: int
    scale_down_cooldown: float
    """Seconds the demand must stay below the current count before agents are stopped."""
    scale_up_cooldown: float = 0.0
    """Seconds between two scale-ups (0: as fast as the poll)."""
    standby_agents: int = 0
    """Warm agents kept waiting for a scale-up, within what the maximum leaves room for."""

    def __post_init__(self) -> None:
        if self.min_agents < 0:
            raise ValueError(f"min_agents must be >= 0, not {self.min_agents}")
        if self.max_agents < max(self.min_agents, 1):
            raise ValueError(
                f"max_agents ({self.max_agents}) must be >= 1 and >= min_agents ({self.min_agents})"
            )
        if self.runs_per_agent < 1:
            raise ValueError(f"runs_per_agent must be >= 1, not {self.runs_per_agent}")
        if self.scale_down_cooldown < 0 or self.scale_up_cooldown < 0:
            raise ValueError("cooldowns must be >= 0 seconds")
        if self.standby_agents < 0:
            raise ValueError(f"standby_agents must be >= 0, not {self.standby_agents}")


@dataclass(frozen=True)
class Backlog:
    """What the work pool holds right now."""

    waiting: int
    """Runs due to start: Scheduled or Late and due now, plus Pending (picked, not started)."""
    running: int
    """Runs that occupy an agent: Running or Cancelling."""


@dataclass(frozen=True)
class ScalerMemory:
    """What the policy remembers between two decisions."""

    below_since: float | None = None
    """When the desired count first fell below the current one (None: it is not below)."""
    last_scale_up: float | None = None


@dataclass(frozen=True)
class Decision:
    desired: int
    """What the backlog asks for, clamped to the bounds."""
    target: int
    """The count to move to now: the desired count, or the current one while holding."""
    reason: str
    memory: ScalerMemory

    def change(self, current: int) -> int:
        """Agents to start (positive) or stop (negative)."""
        return self.target - current


def desired_agents(policy: ScalingPolicy, backlog: Backlog) -> int:
    needed = math.ceil((backlog.waiting + backlog.running) / policy.runs_per_agent)
    return min(max(needed, policy.min_agents), policy.max_agents)


def decide(
    policy: ScalingPolicy, backlog: Backlog, current: int, memory: ScalerMemory, now: float
) -> Decision:
    """The next step, from the backlog, the current count of agents and the memory."""
    desired = desired_agents(policy, backlog)
    if current < policy.min_agents:
        # Not subject to the scale-up cooldown: the bounds always hold.
        up = replace(memory, below_since=None, last_scale_up=now)
        return Decision(desired, desired, "below the minimum", up)
    if desired > current:
        calm = replace(memory, below_since=None)
        last = memory.last_scale_up
        if last is not None and now - last < policy.scale_up_cooldown:
            wait = policy.scale_up_cooldown - (now - last)
            return Decision(desired, current, f"scale-up cooldown: {wait:.0f} s left", calm)
        return Decision(desired, desired, "backlog grew", replace(calm, last_scale_up=now))
    if desired == current:
        return Decision(desired, current, "steady", replace(memory, below_since=None))

    # desired < current: wait out the cooldown, measured from when demand first fell.
    below_since = memory.below_since if memory.below_since is not None else now
    held = replace(memory, below_since=below_since)
    if current > policy.max_agents:
        return Decision(desired, desired, "above the maximum", held)
    if backlog.waiting > 0:
        # An idle agent is about to pick these up: stopping one now could stop it mid-pickup.
        return Decision(desired, current, f"{backlog.waiting} runs waiting to start", held)
    left = policy.scale_down_cooldown - (now - below_since)
    if left > 0:
        return Decision(desired, current, f"scale-down cooldown: {left:.0f} s left", held)
    return Decision(desired, desired, "backlog shrank for the whole cooldown", held)


def agents_to_stop(
    agents: Sequence[str], busy: Iterable[str], count: int, *, ownerless_runs: int = 0
) -> list[str]:
    """Up to `count` agents to stop, from `agents` (oldest first): only idle ones, newest
    first, so the longest-lived (warmest) agents stay.

    `busy` holds the agents that own a Pending, Running or Cancelling run. While any such
    run has no known owner yet (`ownerless_runs`: Pending, before its agent has labelled
    it), any idle-looking agent may be its owner: stop none.
    """
    if count <= 0 or ownerless_runs > 0:
        return []
    busy_set = set(busy)
    idle = [agent for agent in reversed(agents) if agent not in busy_set]
    return idle[:count]


def standby_target(policy: ScalingPolicy, current: int) -> int:
    """How many standby agents to keep beside `current` agents: never more than a scale-up
    to the maximum could promote."""
    return min(policy.standby_agents, max(policy.max_agents - current, 0))


def standby_change(
    policy: ScalingPolicy, backlog: Backlog, current: int, standbys: int, *, online: int
) -> int:
    """Standby agents to start (1 at most, and only while the pool is calm: no run waits, no
    agent is missing and every agent is online: `online` counts those of the `current`
    agents the server sees online) or, beyond the target, to stop (negative)."""
    target = standby_target(policy, current)
    if standbys > target:
        return target - standbys
    # An agent still starting would share the cores with the standby's imports: at start-up
    # the first agent came online 3 s later beside one (make dev, 2 cores).
    calm = backlog.waiting == 0 and desired_agents(policy, backlog) <= current <= online
    return 1 if standbys < target and calm else 0


def scale_up_plan(change: int, standbys: Sequence[str]) -> tuple[list[str], int]:
    """For `change` more agents: the standby agents to promote (from `standbys`, best first)
    and how many agents to start cold."""
    promoted = list(standbys[: max(change, 0)])
    return promoted, max(change - len(promoted), 0)
