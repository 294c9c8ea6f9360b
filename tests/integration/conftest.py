"""A real stack for the integration tests: embedded PostgreSQL, Prefect server, trainer, agent.

One for the package (tests/integration): started by its first test that needs it, stopped
after its last, so that it does not idle through the fault suite that follows."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import LocalStack, free_port
from testkit.prefect_api import PrefectApi
from testkit.tlc import TlcServer

SYNTHETIC_ROWS = 20_000
API_KEY = "test-key-" + "x" * 32


@pytest.fixture(scope="package")
def tlc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlcServer]:
    server = TlcServer(tmp_path_factory.mktemp("tlc"))
    yield server
    server.close()


def new_stack(state_dir: Path, tlc: TlcServer) -> LocalStack:
    """A local stack on free ports, as the integration tests configure it (not started)."""
    return LocalStack(
        state_dir,
        port=free_port(),
        api_port=free_port(),
        mlflow_port=free_port(),
        serving_port=free_port(),
        echo=False,
        extra_env={
            "TLC_URL_TEMPLATE": tlc.url_template,
            "SYNTHETIC_ROWS": str(SYNTHETIC_ROWS),
            # Explicit, so that a developer's .env cannot point the tests elsewhere.
            "DATA_STORE_URL": str(state_dir / "data"),
            "MODEL_STORE_URL": str(state_dir / "models"),
            "WORK_POOL_NAME": "training",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "API_KEY": API_KEY,
            "API_INSECURE_DEV_MODE": "false",
            "SERVING_POLL_SECONDS": "1",
            # Webhooks to a receiver on 127.0.0.1, retried soon (test_webhooks.py).
            "API_WEBHOOKS_ALLOW_PRIVATE": "true",
            "API_WEBHOOK_FIRST_RETRY_SECONDS": "0.2",
        },
    )


@pytest.fixture(scope="package")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tlc: TlcServer, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    yield from running(new_stack(tmp_path_factory.mktemp("stack"), tlc), request)


def running(local: LocalStack, request: pytest.FixtureRequest) -> Iterator[LocalStack]:
    """A fixture's body: `local` started, then stopped, its logs printed if a test failed."""
    local.start()
    yield local
    local.stop()
    if request.session.testsfailed:
        print(local.log_tails())


@pytest.fixture(scope="package")
def prefect(stack: LocalStack) -> PrefectApi:
    return PrefectApi(stack.api_url)


@pytest.fixture(scope="package")
def api(stack: LocalStack) -> Iterator[httpx.Client]:
    """A client of our API service, with the key."""
    with httpx.Client(
        base_url=stack.service_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture(scope="package")
def data_dir(stack: LocalStack) -> Path:
    return Path(stack.env["DATA_STORE_URL"])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `runs_last` change shared state broadly (fuzzing cancels runs it finds):
    after every other integration test, but before the fault suite, so that the integration
    stack (package-scoped) is stopped before the faults start a stack of their own."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("faults") is not None,
            item.get_closest_marker("runs_last") is not None,
        )
    )
