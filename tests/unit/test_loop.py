"""The autoscaler's loop over a recording actuator: what it starts and stops, given snapshots.
(The real actuators are exercised in tests/integration/test_autoscaler.py and in e2e.)"""

from dataclasses import replace

from prefect.client.schemas.objects import StateType

from autoscaler.actuators import Standby
from autoscaler.loop import Autoscaler
from autoscaler.prefect_api import BusyRun, PoolSnapshot
from autoscaler.scaling import Backlog, ScalingPolicy

POLICY = ScalingPolicy(min_agents=1, max_agents=4, runs_per_agent=1, scale_down_cooldown=10)


class RecordingActuator:
    acts = True

    def __init__(self, agents: list[str], standbys: list[Standby] = ()) -> None:
        self.live = list(agents)
        self.standby = list(standbys)
        self.started = 0
        self.started_standby = 0
        self.promoted: list[str] = []
        self.stopped: list[str] = []

    def agents(self) -> list[str]:
        return list(self.live)

    def standbys(self) -> list[Standby]:
        return list(self.standby)

    def owner(self, worker_name: str) -> str | None:
        return worker_name if worker_name in self.live else None

    def claims(self, worker_name: str) -> bool:
        return True

    def start(self, count: int, standby: bool = False) -> None:
        for _ in range(count):
            if standby:
                self.started_standby += 1
                self.standby.append(Standby(f"standby{self.started_standby}", ready=False))
            else:
                self.started += 1
                self.live.append(f"new{self.started}")

    def promote(self, standby: str) -> None:
        self.standby = [s for s in self.standby if s.name != standby]
        self.live.append(standby)
        self.promoted.append(standby)

    def stop(self, agent: str) -> None:
        if agent in self.live:
            self.live.remove(agent)
        else:
            self.standby = [s for s in self.standby if s.name != agent]
        self.stopped.append(agent)

    def close(self) -> None:
        pass


def running_on(*agents: str | None) -> list[BusyRun]:
    return [BusyRun(str(i), StateType.RUNNING, agent) for i, agent in enumerate(agents)]


def scaler(
    actuator: RecordingActuator, snapshots: list, clock: list[float], policy=POLICY
) -> Autoscaler:
    def read() -> PoolSnapshot:
        item = snapshots.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return Autoscaler(policy, actuator, read, clock=lambda: clock[0])


def test_burst_starts_agents_then_only_idle_ones_stop_after_the_cooldown() -> None:
    actuator = RecordingActuator(["a1"])
    clock = [0.0]
    snapshots = [
        PoolSnapshot(Backlog(waiting=6, running=0), [], online_workers=["a1"]),
        # The backlog drains to 2 runs, on a1 and new2: after the cooldown, 2 agents stop.
        PoolSnapshot(
            Backlog(0, 2), running_on("a1", "new2"), online_workers=["a1", "new1", "new2", "new3"]
        ),
        PoolSnapshot(
            Backlog(0, 2), running_on("a1", "new2"), online_workers=["a1", "new1", "new2", "new3"]
        ),
    ]
    autoscaler = scaler(actuator, snapshots, clock)
    assert autoscaler.tick().target == 4
    assert actuator.live == ["a1", "new1", "new2", "new3"]
    clock[0] = 5
    assert autoscaler.tick().target == 4  # cooling down
    clock[0] = 16
    decision = autoscaler.tick()
    assert decision.target == 2
    assert actuator.stopped == ["new3", "new1"]
    assert actuator.live == ["a1", "new2"]


def test_busy_agents_are_kept_even_below_target() -> None:
    actuator = RecordingActuator(["a1", "a2", "a3"])
    snapshots = [PoolSnapshot(Backlog(0, 3), running_on("a1", "a2", "a3"), ["a1", "a2", "a3"])]
    # One agent per run: desired 3, nothing to stop; with one run left on a3, a1 and a2 go.
    autoscaler = scaler(actuator, snapshots, [100.0])
    autoscaler.tick()
    assert actuator.stopped == []
    autoscaler.read_snapshot = lambda: PoolSnapshot(
        Backlog(0, 1), running_on("a3"), ["a1", "a2", "a3"]
    )
    autoscaler.tick()  # starts the cooldown
    autoscaler.clock = lambda: 200.0
    autoscaler.tick()
    assert actuator.stopped == ["a2", "a1"]
    assert actuator.live == ["a3"]


def test_a_run_without_a_known_agent_blocks_every_stop() -> None:
    actuator = RecordingActuator(["a1", "a2", "a3"])
    snapshot = PoolSnapshot(Backlog(0, 1), running_on(None), ["a1", "a2", "a3"])
    autoscaler = scaler(actuator, [snapshot, snapshot], [0.0])
    autoscaler.tick()
    autoscaler.clock = lambda: 100.0
    assert autoscaler.tick().target == 1
    assert actuator.stopped == []


def test_a_failed_read_changes_nothing() -> None:
    actuator = RecordingActuator(["a1", "a2"])
    autoscaler = scaler(actuator, [ConnectionError("server away")], [0.0])
    assert autoscaler.tick() is None
    assert actuator.live == ["a1", "a2"] and actuator.stopped == []


def test_the_metrics_only_backend_exports_the_backlog_and_acts_on_nothing() -> None:
    from autoscaler import metrics as module
    from autoscaler.actuators import MetricsOnly

    snapshots = [PoolSnapshot(Backlog(waiting=6, running=1), [], online_workers=["k8s-agent-1"])]
    decision = scaler(MetricsOnly(), snapshots, [0.0]).tick()  # type: ignore[arg-type]
    assert decision.target == 4  # what KEDA is told through the gauges
    assert module.DESIRED._value.get() == 4
    assert module.WAITING._value.get() == 6 and module.RUNNING._value.get() == 1


def test_a_burst_promotes_ready_standby_agents_first_and_starts_the_rest_cold() -> None:
    policy = replace(POLICY, standby_agents=2)
    actuator = RecordingActuator(["a1"], [Standby("s1", ready=False), Standby("s2", ready=True)])
    burst = PoolSnapshot(Backlog(waiting=6, running=0), [], online_workers=["a1"])
    calm = PoolSnapshot(Backlog(0, 0), [], online_workers=["a1", "s2", "s1", "new1"])
    autoscaler = scaler(actuator, [burst, calm, calm], [0.0], policy)
    assert autoscaler.tick().target == 4
    assert actuator.promoted == ["s2", "s1"]  # the warm one first
    assert actuator.started == 1 and actuator.started_standby == 0  # none during the burst
    assert actuator.live == ["a1", "s2", "s1", "new1"]
    # At the maximum there is no room for standby agents; after the cooldown, idle agents
    # stop and standby agents come back, one per poll.
    clock = [100.0]
    autoscaler.clock = lambda: clock[0]
    autoscaler.tick()
    clock[0] = 200.0
    autoscaler.tick()
    assert actuator.live == ["a1"]
    assert actuator.started_standby == 1


def test_standby_agents_beyond_the_room_left_are_stopped_unready_first() -> None:
    policy = replace(POLICY, standby_agents=3)
    standbys = [Standby("s1", ready=True), Standby("s2", ready=False), Standby("s3", ready=True)]
    actuator = RecordingActuator(["a1", "a2", "a3"], standbys)
    busy = PoolSnapshot(Backlog(0, 3), running_on("a1", "a2", "a3"), ["a1", "a2", "a3"])
    scaler(actuator, [busy], [0.0], policy).tick()
    assert actuator.stopped == ["s2", "s1"]  # room for one: 4 - 3
    assert [s.name for s in actuator.standby] == ["s3"]


def test_at_start_up_the_first_standby_waits_until_the_first_agent_is_online() -> None:
    policy = replace(POLICY, standby_agents=2)
    actuator = RecordingActuator([])
    # The last stack's worker still counts as online for a while: it is not ours.
    starting = PoolSnapshot(Backlog(0, 0), [], online_workers=["old-agent"])
    online = PoolSnapshot(Backlog(0, 0), [], online_workers=["old-agent", "new1"])
    autoscaler = scaler(actuator, [starting, starting, online, online], [0.0], policy)
    autoscaler.tick()
    assert actuator.live == ["new1"] and actuator.started_standby == 0  # it imports alone
    autoscaler.tick()
    assert actuator.started_standby == 0  # still starting
    autoscaler.tick()
    assert actuator.started_standby == 1  # online: standby agents follow, one per poll
    autoscaler.tick()
    assert actuator.started_standby == 2
