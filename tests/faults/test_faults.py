"""Faults in local mode: kill, freeze and stop parts of a running stack; every run must reach
its true final state, none may run twice unless rescheduled once, and our API never answers
500. Each test records seconds to detect, seconds to recover and runs lost."""

import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import psutil
import pytest
from prefect.client.orchestration import SyncPrefectClient

from devstack.stack import LocalStack, wait_until
from faults.conftest import (
    ORPHAN_GRACE_SECONDS,
    RECORDS,
    agent_pid,
    kill_group,
)
from testkit import sse
from testkit.faults import (
    BURST_SUMMARY,
    FINAL_AFTER_OUTAGE_SECONDS,
    PROBE_BODY_LOG,
    ApiWatch,
    burst_of_triggers,
    wait_final,
    wait_running,
)
from testkit.prefect_api import PrefectApi
from trainer.register import zombie_automation

# Each fault starts on a healthy, idle stack (the `settled` fixture).
pytestmark = [pytest.mark.faults, pytest.mark.usefixtures("settled")]
WORKER_LABEL = "prefect.worker.name"
DETECT_LIMIT_SECONDS = 90  # the bound for marking a dead agent's run Crashed


def _probe(prefect: PrefectApi, seconds: float) -> str:
    response = prefect.create_run("probe", {"seconds": seconds})
    response.raise_for_status()
    return response.json()["id"]


class StreamWatch:
    """GET /runs/{id}/events of one run, read in the background from before a fault to the
    stream's end; `events()` gives what it got (testkit.sse's events)."""

    def __init__(self, api: httpx.Client, run_id: str) -> None:
        self.api, self.run_id = api, run_id
        self._events: list[dict] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> "StreamWatch":
        self._thread.start()  # and open before the fault (opening while Prefect is away is a 503)
        wait_until(lambda: self._events or self._error, 30, "the stream's first event")
        return self

    def __exit__(self, *_: object) -> None:
        pass  # the stream ends with the run; `events()` waits for it

    def _read(self) -> None:
        try:
            path = f"/runs/{self.run_id}/events"
            with self.api.stream("GET", path, timeout=httpx.Timeout(30, read=300)) as response:
                response.raise_for_status()
                self._events.extend(sse.events(response.iter_lines()))
        except BaseException as error:  # said by events()
            self._error = error

    def wait_for_log(self, text: str, timeout: float) -> None:
        """Until the stream has shown a log line containing `text` (Prefect has it, then)."""
        wait_until(
            lambda: (
                self._error
                or any(e["event"] == "log" and text in e["data"]["message"] for e in self._events)
            ),
            timeout,
            f"a line with {text!r} in the stream",
        )
        assert self._error is None, f"the stream failed: {self._error!r}"

    def events(self, timeout: float) -> list[dict]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream is still open: {self._events[-3:]}"
        assert self._error is None, f"the stream failed: {self._error!r}"
        return self._events


def _first_seen(prefect: PrefectApi, run_id: str, state: str, timeout: float) -> float:
    wait_until(lambda: state in prefect.states(run_id), timeout, f"run {run_id} to be {state}")
    return time.monotonic()


def test_a_killed_agent_s_run_is_crashed_rescheduled_and_completed(
    fault_stack: LocalStack, prefect: PrefectApi
) -> None:
    run_id = _probe(prefect, 20)
    worker = wait_running(prefect, run_id)["labels"][WORKER_LABEL]
    # The agent and its runs' launchers: the shared fork server kills an engine whose launcher
    # is gone (in Compose the agent container goes, with its fork server and the engine).
    kill_group(agent_pid(fault_stack, worker))
    killed = time.monotonic()

    crashed = _first_seen(prefect, run_id, "CRASHED", DETECT_LIMIT_SECONDS)
    [final] = wait_final(prefect, [run_id], 180)
    recovered = time.monotonic()
    states = prefect.states(run_id)
    assert final["state"]["type"] == "COMPLETED", states
    assert states.count("CRASHED") == 1 and states.count("RUNNING") == 2, states
    assert final["labels"][WORKER_LABEL] != worker  # finished on a new agent
    RECORDS.append(
        ("kill -9 an agent mid-run", f"{crashed - killed:.1f}", f"{recovered - killed:.1f}", 0)
    )


def test_cancelling_a_run_whose_agent_then_dies_ends_cancelled(
    fault_stack: LocalStack, prefect: PrefectApi, api: httpx.Client
) -> None:
    run_id = _probe(prefect, 120)
    agent = agent_pid(fault_stack, wait_running(prefect, run_id)["labels"][WORKER_LABEL])
    kill_group(agent, signal.SIGSTOP)  # frozen: nothing of the agent can act on the cancel
    assert api.post(f"/runs/{run_id}/cancel").status_code == 202
    wait_until(lambda: prefect.flow_run(run_id)["state"]["type"] == "CANCELLING", 30, "CANCELLING")
    kill_group(agent)
    killed = time.monotonic()
    [final] = wait_final(prefect, [run_id], 60)
    assert final["state"]["type"] == "CANCELLED", prefect.states(run_id)
    assert "RUNNING" not in prefect.states(run_id)[-2:]  # not rescheduled
    RECORDS.append(("cancel, then the agent dies", f"{time.monotonic() - killed:.1f}", "-", 0))


def _taken_by_no_agent(prefect: PrefectApi) -> str:
    """A run moved to Pending as an agent would on taking it, with no agent behind it
    (scheduled an hour ahead, so that no live agent takes it first)."""
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = prefect.create_run(
        "probe",
        {"seconds": 1},
        state={"type": "SCHEDULED", "state_details": {"scheduled_time": later}},
    )
    created.raise_for_status()
    run_id = created.json()["id"]
    assert prefect.set_state(run_id, {"type": "PENDING"}, force=True) == "ACCEPT"
    return run_id


def test_a_run_left_pending_by_no_agent_is_crashed_then_rescheduled(
    prefect: PrefectApi,
) -> None:
    # As if an agent took the run (Pending) and died before it could label or start it.
    run_id = _taken_by_no_agent(prefect)
    stranded = time.monotonic()

    crashed = _first_seen(prefect, run_id, "CRASHED", ORPHAN_GRACE_SECONDS + 60)
    [final] = wait_final(prefect, [run_id], 180)
    states = prefect.states(run_id)
    assert final["state"]["type"] == "COMPLETED", states
    assert states.count("CRASHED") == 1 and states.count("RUNNING") == 1, states
    RECORDS.append(
        (
            "an agent dies between taking and starting",
            f"{crashed - stranded:.1f}",
            f"{time.monotonic() - stranded:.1f}",
            0,
        )
    )


def test_a_run_crashed_by_its_worker_is_rescheduled(prefect: PrefectApi) -> None:
    # What Prefect's worker does when the server restarts while it submits a run.
    run_id = _taken_by_no_agent(prefect)
    crash = {"type": "CRASHED", "message": "Flow run could not be submitted to infrastructure"}
    assert prefect.set_state(run_id, crash) == "ACCEPT"
    crashed = time.monotonic()
    [final] = wait_final(prefect, [run_id], 180)
    states = prefect.states(run_id)
    assert final["state"]["type"] == "COMPLETED", states
    assert states.count("RUNNING") == 1, states
    RECORDS.append(
        ("worker reports a submission Crashed", "0", f"{time.monotonic() - crashed:.1f}", 0)
    )


@pytest.mark.parametrize("outage_seconds", [20, 100])
def test_a_postgres_outage_mid_run_ends_with_the_true_final_state(
    fault_stack: LocalStack, prefect: PrefectApi, api: httpx.Client, outage_seconds: int
) -> None:
    run_id = _probe(prefect, 25)
    worker = wait_running(prefect, run_id)["labels"][WORKER_LABEL]
    agent = agent_pid(fault_stack, worker)
    prefect.wait_for_log(run_id, PROBE_BODY_LOG)  # mid-run: in the flow's body
    assert fault_stack.postgres is not None
    with ApiWatch(api, [run_id]) as watch:
        fault_stack.postgres.stop()
        time.sleep(outage_seconds)  # the run ends (at 25 s) during the 100 s outage
        fault_stack.postgres.start()
        back = time.monotonic()
        assert psutil.pid_exists(agent), "the agent exited during the outage"
        [final] = wait_final(prefect, [run_id], 400)
    recovered = time.monotonic()
    states = prefect.states(run_id)
    assert final["state"]["type"] == "COMPLETED", states
    assert states.count("RUNNING") == 1, states
    assert recovered - back < FINAL_AFTER_OUTAGE_SECONDS, recovered - back
    assert watch.statuses[500] == 0, watch.statuses
    assert 503 in watch.statuses, f"the API never reported the outage: {watch.statuses}"
    RECORDS.append(
        (
            f"Postgres stopped {outage_seconds} s mid-run",
            "-",
            f"{recovered - back:.1f} after",
            0,
        )
    )


def test_a_killed_prefect_server_is_restarted_and_runs_complete(
    fault_stack: LocalStack, prefect: PrefectApi, api: httpx.Client
) -> None:
    streamed = prefect.create_run("probe", {"seconds": 15, "lines": 15}).json()["id"]
    ids = [streamed] + [_probe(prefect, 15) for _ in range(2)]
    wait_running(prefect, ids[0])
    server = fault_stack.processes["server"]
    stream = StreamWatch(api, streamed)
    with stream, ApiWatch(api, ids) as watch:
        # Killed once Prefect has a line of the streamed run: the checks of its lines below
        # then have one at least, however long the restart takes (on busy cores it has
        # outlasted the run's 15 s of lines, and every line was lost).
        stream.wait_for_log("probe: line", 60)
        kill_group(server.pid)
        killed = time.monotonic()
        wait_until(
            lambda: (
                fault_stack.processes["server"].pid != server.pid
                and httpx.get(f"{fault_stack.api_url}/ready", timeout=5).status_code == 200
            ),
            120,
            "the server to be restarted and ready",
        )
        back = time.monotonic()
        finals = wait_final(prefect, ids, 300)
        done = time.monotonic()
    for run in finals:
        states = prefect.states(run["id"])
        assert run["state"]["type"] == "COMPLETED", states
        # Once, or once more after a crash the reconciler recovered.
        assert states.count("RUNNING") <= 1 + states.count("CRASHED"), states
    assert watch.statuses[500] == 0, watch.statuses
    # A stream of the run rode the outage out: it said it was polling, and ended with the
    # run, with every line Prefect has of it (a line the engine sent while the server was
    # down never reached Prefect: its log handler says "Error logging to API").
    events = stream.events(timeout=120)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "end" and events[-1]["data"]["state"]["type"] == "COMPLETED", kinds
    notices = [e["data"]["mode"] for e in events if e["event"] == "notice"]
    assert "polling" in notices, kinds
    lines = {e["data"]["message"] for e in events if e["event"] == "log"}
    kept = set(prefect.logs(streamed))
    assert kept <= lines, sorted(kept - lines)
    assert any("probe: line" in x for x in kept), sorted(kept)
    RECORDS.append(
        (
            f"kill -9 the Prefect server (back in {back - killed:.0f} s)",
            "-",
            f"{done - killed:.1f}",
            0,
        )
    )


def test_the_api_drains_in_flight_requests_on_sigterm(
    fault_stack: LocalStack, prefect: PrefectApi, api: httpx.Client
) -> None:
    [done] = wait_final(prefect, [_probe(prefect, 0)], 90)
    server = fault_stack.processes["server"].pid
    service = fault_stack.processes["api"]
    api_log = fault_stack.log_dir / "api.log"
    logged_before = api_log.stat().st_size
    result: dict[str, int] = {}
    # The server frozen: the request waits inside the API for Prefect's answer.
    kill_group(server, signal.SIGSTOP)
    try:
        reader = threading.Thread(
            target=lambda: result.update(status=api.get(f"/runs/{done['id']}").status_code)
        )
        reader.start()
        time.sleep(2)
        service.send_signal(signal.SIGTERM)
        time.sleep(2)
        assert service.poll() is None, "the API exited with a request in flight"
    finally:
        kill_group(server, signal.SIGCONT)
    reader.join(60)
    assert result == {"status": 200}
    # Uvicorn drains, then ends by the SIGTERM it caught (-15), as a plain process would.
    assert service.wait(30) in (0, -signal.SIGTERM)
    with api_log.open() as log:
        log.seek(logged_before)
        shutdown = log.read()
    assert "Waiting for application shutdown" in shutdown, shutdown
    assert "Finished server process" in shutdown


def test_a_backfill_goes_on_after_its_api_is_killed(
    fault_stack: LocalStack, prefect: PrefectApi, api: httpx.Client
) -> None:
    """kill -9 of the API mid-backfill: the supervisor starts it again, and the new process
    takes the backfill over once the dead one's lease (30 s) has run out, starting each
    month once (Prefect's idempotency key covers a run started and never recorded)."""
    body = {"flow": "load-data", "start": "2011-01", "end": "2011-06", "max_active": 1,
            "parameters": {"source": "synthetic"}}  # fmt: skip
    made = api.post("/backfills", json=body)
    assert made.status_code == 202, made.text
    tag = f"backfill:{made.json()['id']}"

    def runs() -> list[dict]:
        found = prefect.http.post(
            "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": [tag]}}, "limit": 200}
        )
        found.raise_for_status()
        return found.json()

    wait_until(lambda: len(runs()) >= 2, 90, "the backfill's second run")
    killed = time.monotonic()
    kill_group(fault_stack.processes["api"].pid)
    deadline = killed + 180
    while True:
        try:
            shown = api.get(f"/backfills/{made.json()['id']}").json()
        except httpx.TransportError:
            shown = {"status": "down"}  # the API is coming back
        if shown["status"] not in ("running", "down"):
            break
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    assert shown["status"] == "completed", shown
    months = sorted(run["parameters"]["month"] for run in runs())
    assert months == [f"2011-{m:02d}" for m in range(1, 7)]  # each once
    RECORDS.append(("kill -9 the API mid-backfill", "-", f"{time.monotonic() - killed:.1f}", 0))


def test_a_heartbeat_after_completion_cannot_crash_the_run(
    fault_stack: LocalStack, prefect: PrefectApi
) -> None:
    # The zombie automation as registered, but for one run each and a 10 s window.
    [done] = wait_final(prefect, [_probe(prefect, 0)], 90)
    live = _probe(prefect, 75)
    wait_running(prefect, live)
    client = SyncPrefectClient(fault_stack.api_url).__enter__()
    automations = [
        client.create_automation(
            zombie_automation(name=f"test-zombie-{run_id}", runs=run_id, within_seconds=10)
        )
        for run_id in (done["id"], live)
    ]
    try:
        heartbeat = {
            "id": str(uuid.uuid4()),
            "occurred": datetime.now(UTC).isoformat(),
            "event": "prefect.flow-run.heartbeat",
            "resource": {"prefect.resource.id": f"prefect.flow-run.{done['id']}"},
        }
        prefect.http.post("/events", json=[heartbeat]).raise_for_status()
        # Control: the live run, beating every 30 s, misses the 10 s window and is crashed.
        _first_seen(prefect, live, "CRASHED", 60)
        assert prefect.flow_run(done["id"])["state"]["type"] == "COMPLETED"
        assert prefect.states(done["id"]).count("CRASHED") == 0
        # It still beats, so it is not rescheduled: its engine finishes it.
        [final] = wait_final(prefect, [live], 150)
        states = prefect.states(live)
        assert final["state"]["type"] == "COMPLETED", states
        assert states.count("RUNNING") == 1, states
    finally:
        for automation_id in automations:
            client.delete_automation(automation_id)
        client.__exit__(None, None, None)


def test_a_burst_of_triggers_with_and_without_a_shared_key(
    prefect: PrefectApi, api: httpx.Client
) -> None:
    burst = burst_of_triggers(api, prefect, load_timeout=120, drain_timeout=600)
    RECORDS.append((BURST_SUMMARY, "-", f"{burst.drained:.1f} drain", 0))
