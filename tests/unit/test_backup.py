"""backup, restore and upgrade (devstack.backup) on a fake stack: what is written, checked,
refused, and the order of the steps. The real stacks: tests/integration/test_backup.py (make
dev) and tests/e2e/test_compose.py (Compose)."""

import shutil
from pathlib import Path

import pytest

from devstack.archive import ArchiveError
from devstack.backup import backup, check_restorable, restore, upgrade
from devstack.targets import TargetError


class FakeTarget:
    """A stack whose databases are bytes and whose stores are directories; it logs each step."""

    kind = "dev"

    def __init__(self, root: Path, postgresql: str = "18.1") -> None:
        self.root, self.calls = root, []
        self.dbs = {"prefect": b"prefect rows", "mlflow": b"mlflow rows", "app": b"app rows"}
        self.version = {"prefect": "3.8.8", "mlflow": "3.17.2", "postgresql": postgresql}
        self.busy: list[list[str]] = []
        self.fail_load = False
        for store in ("data", "models", "mlflow-artifacts"):
            (root / store).mkdir(parents=True)

    def open(self) -> None:
        self.calls.append("open")

    def close(self) -> None:
        self.calls.append("close")

    def versions(self) -> dict[str, str]:
        return dict(self.version)

    def databases(self) -> dict[str, str]:
        return {"prefect": "prefect", "mlflow": "mlflow", "app": "app"}

    def query(self, statement: str) -> list[list[str]]:
        self.calls.append(statement.split()[0])
        words = statement.replace('"', "").split()
        if statement.startswith("SELECT datname FROM pg_database"):
            return [[name] for name in self.dbs]
        if statement.startswith("SELECT datname, count"):
            return self.busy
        if words[0] == "DROP":
            self.dbs.pop(words[4], None)
        elif words[0] == "CREATE":
            self.dbs[words[2]] = b""
        elif words[0] == "ALTER":
            self.dbs[words[5]] = self.dbs.pop(words[2])
        return []

    def dump(self, database: str, out: Path) -> None:
        out.write_bytes(self.dbs[database])

    def load(self, database: str, dump: Path) -> None:
        if self.fail_load and database.startswith("app"):
            raise TargetError("pg_restore: error: out of disk")
        self.calls.append(f"load {database}")
        self.dbs[database] = dump.read_bytes()

    def stores(self) -> dict[str, str | None]:
        return {s: str(self.root / s) for s in ("data", "models", "mlflow-artifacts")}

    def read_store(self, store: str, into: Path) -> None:
        shutil.copytree(self.root / store, into, dirs_exist_ok=True)

    def write_store(self, store: str, source: Path) -> None:
        self.calls.append(f"write {store}")
        shutil.rmtree(self.root / store)
        shutil.copytree(source, self.root / store)

    def stop_services(self) -> None:
        self.calls.append("stop_services")

    def apply_roles(self) -> None:
        self.calls.append("apply_roles")

    def migrate(self) -> None:
        self.calls.append("migrate")

    def start(self) -> None:
        self.calls.append("start")


def quiet(_: str) -> None:
    pass


@pytest.fixture
def stack(tmp_path: Path) -> FakeTarget:
    fake = FakeTarget(tmp_path / "stack")
    (fake.root / "data" / "fhv").mkdir()
    (fake.root / "data" / "fhv" / "2021-06.parquet").write_bytes(b"PAR1 june")
    (fake.root / "mlflow-artifacts" / "1" / "model.pkl").parent.mkdir(parents=True)
    (fake.root / "mlflow-artifacts" / "1" / "model.pkl").write_bytes(b"model")
    return fake


def test_backup_then_restore_into_a_fresh_stack(stack: FakeTarget, tmp_path: Path) -> None:
    archive = tmp_path / "backups" / "b.tar.gz"
    manifest = backup(stack, archive, quiet)
    assert manifest.databases == {"prefect": "prefect", "mlflow": "mlflow", "app": "app"}
    assert manifest.versions["prefect"] == "3.8.8" and manifest.versions["stack"]
    assert {m.name for m in manifest.members} == {
        "databases/prefect.pgdump",
        "databases/mlflow.pgdump",
        "databases/app.pgdump",
        "stores/data/fhv/2021-06.parquet",
        "stores/mlflow-artifacts/1/model.pkl",
    }
    assert not [p for p in archive.parent.iterdir() if p.name != "b.tar.gz"]  # no staging left

    fresh = FakeTarget(tmp_path / "fresh")
    fresh.dbs = {"prefect": b"fresh", "app": b"fresh"}
    restore(fresh, archive, quiet)
    assert fresh.dbs == stack.dbs
    assert (fresh.root / "data/fhv/2021-06.parquet").read_bytes() == b"PAR1 june"
    assert (fresh.root / "mlflow-artifacts/1/model.pkl").read_bytes() == b"model"
    assert list((fresh.root / "models").iterdir()) == []
    # Every database loaded before any is replaced; the stores after the databases.
    steps = fresh.calls
    assert steps.index("stop_services") < steps.index("load prefect_restoring")
    assert max(i for i, s in enumerate(steps) if s.startswith("load")) < steps.index("ALTER")
    assert steps.index("ALTER") < steps.index("write data")
    # pg_restore leaves the superuser owning all: each database goes back to its role.
    last_alter = max(i for i, s in enumerate(steps) if s == "ALTER")
    assert last_alter < steps.index("apply_roles") < steps.index("write data")
    assert steps[-1] == "close"


def test_a_corrupt_archive_touches_nothing(stack: FakeTarget, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    backup(stack, archive, quiet)
    raw = bytearray(archive.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    archive.write_bytes(bytes(raw))
    fresh = FakeTarget(tmp_path / "fresh")
    before = dict(fresh.dbs)
    with pytest.raises(ArchiveError):
        restore(fresh, archive, quiet)
    assert fresh.calls == [] and fresh.dbs == before


def test_a_newer_postgres_or_prefect_is_refused_before_anything_changes(
    stack: FakeTarget, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    manifest = backup(stack, archive, quiet)
    older = FakeTarget(tmp_path / "older", postgresql="16.4 (Debian 16.4-1)")
    with pytest.raises(TargetError, match=r"made by PostgreSQL 18.1, this stack runs 16.4"):
        restore(older, archive, quiet)
    assert "stop_services" not in older.calls and "DROP" not in older.calls
    with pytest.raises(TargetError, match=r"made with prefect 3.8.8, this stack runs 3.7.0"):
        check_restorable(manifest, {**older.version, "postgresql": "18.0", "prefect": "3.7.0"})


def test_databases_in_use_are_refused(stack: FakeTarget, tmp_path: Path) -> None:
    archive = tmp_path / "b.tar.gz"
    backup(stack, archive, quiet)
    stack.busy = [["prefect", "7"]]
    with pytest.raises(TargetError, match=r"in use: prefect \(7\) connections"):
        restore(stack, archive, quiet)
    assert "DROP" not in stack.calls


def test_a_failure_part_way_says_so_and_keeps_the_live_databases(
    stack: FakeTarget, tmp_path: Path
) -> None:
    archive = tmp_path / "b.tar.gz"
    backup(stack, archive, quiet)
    stack.dbs["prefect"] = b"newer rows"
    stack.fail_load = True
    with pytest.raises(TargetError, match=r"failed part way, the stack is NOT in a consistent"):
        restore(stack, archive, quiet)
    assert stack.dbs["prefect"] == b"newer rows"  # nothing swapped in: the load failed first
    assert "ALTER" not in stack.calls


def test_upgrade_backs_up_with_the_stack_stopped_then_migrates(
    stack: FakeTarget, tmp_path: Path
) -> None:
    upgrade(stack, tmp_path / "before-upgrade.tar.gz", quiet)
    assert (tmp_path / "before-upgrade.tar.gz").exists()
    steps = [s for s in stack.calls if s in ("stop_services", "migrate", "SELECT", "apply_roles")]
    # The migrations run as the services' roles: a stack from before them gets them first.
    assert steps == ["stop_services", "SELECT", "apply_roles", "migrate"]
    assert "start" not in stack.calls  # the caller starts it (make dev runs in the foreground)
