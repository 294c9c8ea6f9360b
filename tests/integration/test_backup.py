"""`make backup`, `make restore` and `make upgrade` on a local stack of its own (as `make dev`
runs it): backed up while it runs, wiped, restored, and the same runs, champion and
predictions found; then its Prefect schema moved one revision down and upgraded."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg2
import pytest
from mlflow.tracking import MlflowClient

from devstack.backup import backup, restore, upgrade
from devstack.stack import LocalStack, wait_until
from devstack.targets import DevTarget
from integration.conftest import new_stack, running
from integration.servingkit import AUTH
from testkit.prefect_api import PrefectApi, prefect_schema_head
from testkit.tlc import TlcServer
from trainer.registry import CHAMPION, model_name

pytestmark = pytest.mark.integration
TRIP = {"trips": [{"pickup_location_id": 132, "dropoff_location_id": 7}]}


@pytest.fixture(scope="module")
def local(
    tmp_path_factory: pytest.TempPathFactory, tlc: TlcServer, request: pytest.FixtureRequest
) -> Iterator[LocalStack]:
    """A stack of its own: the tests stop it, delete its state and migrate its database."""
    yield from running(new_stack(tmp_path_factory.mktemp("backup-stack"), tlc), request)


def history(stack: LocalStack) -> dict[str, str]:
    """The stack's run history: id -> state of every flow run but the scheduler's future ones
    (which Prefect deletes and plans again whenever the trainer re-registers, at each start)."""
    response = httpx.post(f"{stack.api_url}/flow_runs/filter", json={"limit": 200}, timeout=30)
    response.raise_for_status()
    return {r["id"]: r["state"]["type"] for r in response.json() if not r["auto_scheduled"]}


def champion(stack: LocalStack) -> str:
    client = MlflowClient(stack.mlflow_url)
    return client.get_model_version_by_alias(model_name("fhv"), CHAMPION).version


def served_version(stack: LocalStack) -> str | None:
    response = httpx.post(f"{stack.serving_url}/predict", json=TRIP, headers=AUTH, timeout=10)
    return response.json()["version"] if response.status_code == 200 else None


def prefect_revision(stack: LocalStack) -> str:
    connection = psycopg2.connect(stack.database_urls["prefect"])
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT version_num FROM alembic_version")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def test_a_wiped_stack_restored_has_its_runs_champion_and_serving(
    local: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefect = PrefectApi(local.api_url)
    params = {"date": "2021-08-15", "auto_load": True, "source": "synthetic"}
    trained = prefect.run("train-model", params, timeout=300)
    assert trained["state"]["type"] == "COMPLETED", trained["state"]
    version = champion(local)
    wait_until(lambda: served_version(local) == version, 60, "serving the champion")
    runs = history(local)
    assert len(runs) >= 3  # train-model and its two load-data subflows

    archive = tmp_path / "backups" / "stack.tar.gz"
    started = time.monotonic()
    manifest = backup(DevTarget(local), archive)  # while the stack runs
    took = time.monotonic() - started
    assert set(manifest.databases) == {"prefect", "mlflow", "app"}
    assert manifest.stack == "dev" and manifest.versions["postgresql"].startswith("18")
    stores = {m.name.split("/")[1] for m in manifest.members if m.name.startswith("stores/")}
    assert stores == {"data", "models", "mlflow-artifacts"}

    local.stop()
    for wiped in ("postgres", "data", "models", "mlflow", "prefect"):
        shutil.rmtree(local.state_dir / wiped, ignore_errors=True)
    started = time.monotonic()
    restore(DevTarget(local), archive)
    restored_in = time.monotonic() - started
    local.start()

    assert history(local) == runs
    assert champion(local) == version
    wait_until(lambda: served_version(local) == version, 60, "serving the restored champion")
    with capsys.disabled():
        print(
            f"\nbackup {took:.1f} s, {archive.stat().st_size / 1e6:.2f} MB, "
            f"{len(manifest.members)} files; restore {restored_in:.1f} s"
        )


def test_upgrade_backs_up_and_migrates_a_database_one_revision_behind(
    local: LocalStack, tmp_path: Path
) -> None:
    head = prefect_schema_head()
    local.stop()
    local.prepare()  # PostgreSQL alone
    try:
        assert prefect_revision(local) == head
        subprocess.run(
            ["prefect", "server", "database", "downgrade", "-y", "-r", "-1"],
            env=local.env, check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        assert prefect_revision(local) != head
    finally:
        local.stop()

    archive = tmp_path / "before-upgrade.tar.gz"
    manifest = upgrade(DevTarget(local), archive)
    assert archive.exists() and "databases/prefect.pgdump" in {m.name for m in manifest.members}
    local.prepare()
    try:
        assert prefect_revision(local) == head  # migrated by the upgrade, not the server's start
    finally:
        local.stop()

    local.start()
    probe = PrefectApi(local.api_url).run("probe", {"seconds": 1})
    assert probe["state"]["type"] == "COMPLETED", probe["state"]
    wait_until(lambda: served_version(local) == champion(local), 60, "serving the champion")
