"""A local stack to break: embedded PostgreSQL, the Prefect server, the autoscaler with its
agents (as `make dev` runs them) and the API, with every service supervised as in make dev."""

import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import psutil
import pytest

from devstack.stack import LocalStack, free_port
from testkit.prefect_api import PrefectApi

API_KEY = "fault-key-" + "x" * 32
POOL = "faults"
MAX_AGENTS = 2
ORPHAN_GRACE_SECONDS = 10
# What each fault cost: (fault, seconds to detect, seconds to recover, runs lost).
RECORDS: list[tuple[str, str, str, int]] = []


@pytest.fixture(scope="session")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    state_dir = tmp_path_factory.mktemp("faults")
    stack = LocalStack(
        state_dir,
        port=free_port(),
        api_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        echo=False,
        extra_env={
            "DATA_STORE_URL": str(state_dir / "data"),
            "MODEL_STORE_URL": str(state_dir / "models"),
            "SYNTHETIC_ROWS": "2000",
            "WORK_POOL_NAME": POOL,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "AGENT_LIMIT": "2",
            "AUTOSCALER_MIN_AGENTS": "1",
            "AUTOSCALER_MAX_AGENTS": str(MAX_AGENTS),
            "AUTOSCALER_POLL_SECONDS": "1",
            "AUTOSCALER_SCALE_DOWN_COOLDOWN_SECONDS": "10",
            "AUTOSCALER_ORPHAN_GRACE_SECONDS": str(ORPHAN_GRACE_SECONDS),
            "AUTOSCALER_METRICS_PORT": str(free_port()),
            "API_KEY": API_KEY,
            "API_INSECURE_DEV_MODE": "false",
            # The burst test sends 100 requests at once with one key (testkit.faults).
            "API_RATE_LIMIT_BURST": "1000",
            "API_RATE_LIMIT_PER_SECOND": "1000",
        },
    )
    stack.start(agents=0, autoscale=True)  # as make dev: the autoscaler keeps the agents
    stop = threading.Event()

    def supervise() -> None:  # as make dev's main loop
        while not stop.wait(0.5):
            stack.supervise()

    supervisor = threading.Thread(target=supervise, daemon=True)
    supervisor.start()
    yield stack
    stop.set()
    supervisor.join()
    stack.stop()
    if request.session.testsfailed:
        print(stack.log_tails(80))


@pytest.fixture(scope="session")
def prefect(fault_stack: LocalStack) -> PrefectApi:
    return PrefectApi(fault_stack.api_url)


@pytest.fixture(scope="session")
def api(fault_stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fault_stack.service_url,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ) as client:
        yield client


@pytest.fixture
def settled(fault_stack: LocalStack, prefect: PrefectApi) -> Iterator[None]:
    """Each fault starts on a healthy stack: server and API ready, an agent online, nothing
    left running; on failure, the services' logs."""
    deadline = time.monotonic() + 180
    while True:
        try:
            busy = prefect.count_runs(["PENDING", "RUNNING", "CANCELLING"], pool=POOL)
            busy += prefect.count_runs(["SCHEDULED"], pool=POOL, due_before=datetime.now(UTC))
            ready = (
                fault_stack.online_workers()
                and httpx.get(f"{fault_stack.service_url}/readyz", timeout=5).status_code == 200
            )
            if ready and busy == 0:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the stack did not settle before the test"
        time.sleep(1)
    yield


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    if not RECORDS:
        return
    terminalreporter.section("faults: seconds to detect, seconds to recover, runs lost")
    terminalreporter.write_line(f"{'fault':44} {'detect':>8} {'recover':>8} {'lost':>5}")
    for fault, detect, recover, lost in RECORDS:
        terminalreporter.write_line(f"{fault:44} {detect:>8} {recover:>8} {lost:>5}")


# -- helpers -----------------------------------------------------------------------------


def agent_pid(stack: LocalStack, worker_name: str) -> int:
    """The agent process (a session leader: its pid is its group) of a worker."""
    autoscaler = psutil.Process(stack.processes["autoscaler"].pid)
    for child in autoscaler.children():
        try:
            if child.environ().get("AGENT_NAME") == worker_name:
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no agent process runs worker {worker_name}")


def kill_group(pgid: int, signum: int = signal.SIGKILL) -> None:
    os.killpg(pgid, signum)
