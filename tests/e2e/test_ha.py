"""The highly available Prefect server (docker-compose.ha.yaml) on a real Docker engine: two
API replicas behind nginx, the background services apart, messaging and leases on Redis,
migrations by an init service. One replica is killed during a burst of 50 triggers.

Its own Compose project, after the main stack is down (`make e2e` runs it second): both
publish the same port, the front door's, on 127.0.0.1; there its Prefect upstream is the
load balancer."""

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from e2e.conftest import PREFECT, PREFECT_UI, Compose, figure, write_env
from testkit.faults import wait_final

pytestmark = pytest.mark.e2e
FILES = ("docker-compose.yaml", "docker-compose.ha.yaml")
TRIGGERS = 50
AGENT_LIMIT = 5


@pytest.fixture(scope="module")
def ha(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Compose]:
    env_file = write_env(tmp_path_factory.mktemp("ha") / ".env")
    # One agent container takes the whole burst: with AGENT_LIMIT 2 its 50 runs drained in
    # 25 rounds (111 s), with 5 in 53 s. The replicas are what is under test, not the agent's
    # slots, and more runs in flight at the kill only make it harder.
    env = env_file.read_text()
    assert "AGENT_LIMIT=2\n" in env
    env_file.write_text(env.replace("AGENT_LIMIT=2\n", f"AGENT_LIMIT={AGENT_LIMIT}\n"))
    stack = Compose(env_file, "stack-ha", FILES)
    try:
        stack.reset()
        stack.run("build", timeout=1800)
        # What triggering needs; MLflow comes as the agent's dependency.
        # --wait: scripts that wait for the HA stack must see it up (server-services too).
        stack.run(
            "up", "-d", "--wait", "--wait-timeout", "600",
            "lb", "server-services", "api", "agent", "gateway",
            timeout=700,
        )  # fmt: skip
        stack.wait_healthy(services=("lb", "server", "agent", "api", "gateway"))
        yield stack
    finally:
        if request.session.testsfailed:
            print(stack.run("logs", "--no-color", "--tail", "150", check=False))
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=300)


def _by_service(stack: Compose) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for container in stack.containers():
        found.setdefault(container["Service"], []).append(container)
    return found


def test_two_api_replicas_services_once_migrations_once(ha: Compose) -> None:
    services = _by_service(ha)
    assert len(services["server"]) == 2
    assert all(c["Health"] == "healthy" for c in services["server"])
    assert [c["State"] for c in services["server-services"]] == ["running"]
    [migrate] = services["server-migrate"]
    assert (migrate["State"], migrate["ExitCode"]) == ("exited", 0)
    # Only the services container runs the scheduler; the replicas serve the API alone.
    for replica in services["server"]:
        ps = subprocess.run(
            ["docker", "exec", replica["Name"], "cat", "/proc/1/cmdline"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert "--no-services" in ps.replace("\0", " ")
        # Neither replica failed its start-up: two replicas registering Prefect's block types
        # at once collided on uq_block_type__slug, and the loser restarted (server-migrate
        # registers them now, once).
        restarts = subprocess.run(
            ["docker", "inspect", "-f", "{{.RestartCount}}", replica["Name"]],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert restarts.strip() == "0", replica["Name"]
    # ... and they are registered: the UI's block catalogue is not empty.
    block_types = ha.prefect().http.post("/block_types/filter", json={})
    block_types.raise_for_status()
    assert "secret" in {block_type["slug"] for block_type in block_types.json()}
    # Open health through the door, which reaches the replicas through the balancer.
    with ha.client() as door:
        assert door.get(f"{PREFECT}/health").status_code == 200
    # The door's Prefect upstream is the balancer (door-run renders it by address).
    rendered = ha.run("exec", "-T", "gateway", "cat", "/tmp/door-upstreams.conf")
    assert "door_prefect lb:4200;" in rendered


def test_a_replica_killed_during_a_burst_loses_no_run_and_runs_none_twice(ha: Compose) -> None:
    api, prefect = ha.api(), ha.prefect()
    victim = _by_service(ha)["server"][0]["Name"]
    body = {"flow": "probe", "parameters": {"seconds": 1}}
    answered: list[int] = []
    kill_after = threading.Event()
    retried: Counter[int] = Counter()

    def trigger(key: str) -> httpx.Response:
        # As a well-behaved client: a 503 is retried after its Retry-After with the same key.
        for _ in range(5):
            response = api.post("/runs", json=body, headers={"Idempotency-Key": key})
            if response.status_code != 503:
                break
            retried[503] += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))
        answered.append(response.status_code)
        if len(answered) == 10:
            kill_after.set()
        return response

    def kill() -> None:
        kill_after.wait(120)
        subprocess.run(["docker", "kill", victim], check=True, capture_output=True)

    killer = threading.Thread(target=kill)
    killer.start()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(trigger, [f"ha-burst-{i}" for i in range(TRIGGERS)]))
    killer.join()
    assert Counter(r.status_code for r in responses) == {202: TRIGGERS}, retried
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == TRIGGERS

    killed = time.monotonic()
    finals = wait_final(prefect, sorted(ids), 600)
    assert Counter(run["state"]["type"] for run in finals) == {"COMPLETED": TRIGGERS}
    for run in finals:
        assert run["run_count"] == 1, run  # none ran twice
        assert prefect.states(run["id"]).count("RUNNING") == 1
    # The UI and its API keep answering through the door and the balancer (the UI's entry
    # redirects to its default version, /prefect/v2/).
    ui = ha.http.get(f"{PREFECT_UI}/", headers={"Accept": "text/html"}, follow_redirects=True)
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    assert ui.url.path.startswith("/prefect/")
    assert prefect.http.get("/deployments/name/probe/monthly").status_code == 200
    figure(
        f"HA: one of 2 API replicas killed after 10 of {TRIGGERS} triggers: all {TRIGGERS} "
        f"accepted ({retried[503]} retried after a 503), all completed, each once; "
        f"drained {time.monotonic() - killed:.1f} s after the burst"
    )
