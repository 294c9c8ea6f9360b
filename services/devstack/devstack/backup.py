"""`make backup`, `make restore` and `make upgrade`, on the Compose stack or local mode.

- backup: a pg_dump of each database (each a consistent snapshot, taken while the stack
  runs), then the stores (the data store, the model store, MLflow's artifacts): after the
  databases, so that every artifact a database names is in the archive. One `.tar.gz` with a
  manifest (devstack.archive).
- restore: the whole archive is read and checked against its manifest first; then, with
  nothing but PostgreSQL running, each database is restored beside the live one
  (`<name>_restoring`) and all are swapped in only once all three loaded, then given back to
  their roles (roles.psql: pg_restore runs as the superuser, without owners or grants, so that
  an archive of either kind of stack loads into the other); then the stores.
- upgrade: with the stack stopped (but PostgreSQL), a backup, then the roles, owners and
  grants (services/postgres/initdb/roles.psql: a stack from before them gets them), then
  Prefect's and MLflow's migrations; `main` then starts the stack.

Steps and checks are here; how each kind of stack does them is in devstack.targets.
"""

import argparse
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from packaging.version import InvalidVersion, Version

from devstack.archive import ArchiveError, Manifest, read_archive, write_archive
from devstack.settings import DevSettings
from devstack.stack import REPO, LocalStack
from devstack.targets import ComposeTarget, DevTarget, Target, TargetError, stack_version

Progress = Callable[[str], None]
RESTORING = "_restoring"


def progress(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def default_archive(now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return REPO / "backups" / f"{stamp}.tar.gz"


def backup(target: Target, out: Path, say: Progress = progress) -> Manifest:
    """Write one archive of `target`'s databases and stores to `out`."""
    started = time.monotonic()
    target.open()
    try:
        versions = {"stack": stack_version(), **target.versions()}
        say(
            f"backing up the {target.kind} stack: "
            + ", ".join(f"{k} {v}" for k, v in versions.items())
        )
        existing = {row[0] for row in target.query("SELECT datname FROM pg_database")}
        staging_parent = out.parent.resolve()
        staging_parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=staging_parent, prefix=".backup-") as tmp:
            staging, skipped, databases = Path(tmp), {}, {}
            (staging / "databases").mkdir()
            for role, name in target.databases().items():
                if name not in existing:
                    skipped[f"databases/{role}"] = f"no database {name} on the server"
                    say(f"  database {name}: absent, skipped")
                    continue
                t0, dump = time.monotonic(), staging / "databases" / f"{role}.pgdump"
                target.dump(name, dump)
                databases[role] = name
                size, seconds = dump.stat().st_size / 1e6, time.monotonic() - t0
                say(f"  database {name}: {size:.2f} MB in {seconds:.1f} s")
            stores = target.stores()
            for store, where in stores.items():
                if where is None:
                    skipped[f"stores/{store}"] = "not a local directory or volume"
                    say(f"  store {store}: not a local directory, skipped")
                    continue
                t0, into = time.monotonic(), staging / "stores" / store
                into.mkdir(parents=True)
                target.read_store(store, into)
                files = [p for p in into.rglob("*") if p.is_file()]
                size, seconds = sum(p.stat().st_size for p in files) / 1e6, time.monotonic() - t0
                say(f"  store {store}: {len(files)} files, {size:.2f} MB in {seconds:.1f} s")
            manifest = Manifest(
                created=datetime.now(UTC).isoformat(timespec="seconds"),
                stack=target.kind,
                versions=versions,
                databases=databases,
                stores={s: w for s, w in stores.items() if w is not None},
                skipped=skipped,
            )
            manifest = write_archive(staging, manifest, out, say)
    finally:
        target.close()
    size, seconds = out.stat().st_size / 1e6, time.monotonic() - started
    say(f"backup written: {out} ({size:.2f} MB) in {seconds:.1f} s")
    return manifest


def check_restorable(manifest: Manifest, versions: dict[str, str]) -> None:
    """Refuse what this stack cannot load: a dump of a newer PostgreSQL major version (its
    pg_restore cannot read it), or schemas of a newer Prefect or MLflow."""
    major = lambda version: int(version.split(".")[0])  # noqa: E731
    theirs, ours = manifest.versions["postgresql"], versions["postgresql"]
    if major(theirs.split()[0]) > major(ours.split()[0]):
        raise TargetError(
            f"the archive was made by PostgreSQL {theirs}, this stack runs {ours}: its "
            "pg_restore cannot read a newer major version's dumps (restore it into a stack "
            "like the one it came from)"
        )
    for name in ("prefect", "mlflow"):
        try:
            newer = Version(manifest.versions[name]) > Version(versions[name])
        except (InvalidVersion, KeyError):
            continue
        if newer:
            raise TargetError(
                f"the archive was made with {name} {manifest.versions[name]}, this stack runs "
                f"{versions[name]}: an older {name} cannot use a newer schema; upgrade the "
                "stack first"
            )


def restore(target: Target, archive: Path, say: Progress = progress) -> Manifest:
    """Bring `target` back to `archive`. Nothing is touched until the archive checked whole."""
    started = time.monotonic()
    parent = archive.resolve().parent
    staging_dir = parent if os.access(parent, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=staging_dir, prefix=".restore-") as tmp:
        staging = Path(tmp)
        say(f"checking {archive}")
        manifest = read_archive(archive, staging, say)
        say(
            f"archive of a {manifest.stack} stack, made {manifest.created}: "
            + ", ".join(f"{k} {v}" for k, v in manifest.versions.items())
        )
        target.open()
        try:
            check_restorable(manifest, target.versions())
            target.stop_services()
            names = target.databases()
            _refuse_busy(target, [names[role] for role in manifest.databases])
            try:
                _restore_staged(target, manifest, staging, say)
            except (TargetError, OSError) as error:
                raise TargetError(
                    f"restore of {archive} failed part way, the stack is NOT in a consistent "
                    f"state: {error}. Fix the cause and run the restore again"
                ) from error
        finally:
            target.close()
    say(f"restored {archive} in {time.monotonic() - started:.1f} s")
    return manifest


def _restore_staged(target: Target, manifest: Manifest, staging: Path, say: Progress) -> None:
    names = target.databases()
    for role in manifest.databases:
        t0, name = time.monotonic(), names[role] + RESTORING
        target.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        target.query(f'CREATE DATABASE "{name}"')
        target.load(name, staging / "databases" / f"{role}.pgdump")
        say(f"  database {names[role]}: loaded in {time.monotonic() - t0:.1f} s")
    for role in manifest.databases:  # all of them loaded: swap them in
        target.query(f'DROP DATABASE IF EXISTS "{names[role]}" WITH (FORCE)')
        target.query(f'ALTER DATABASE "{names[role] + RESTORING}" RENAME TO "{names[role]}"')
    say("  databases swapped in")
    target.apply_roles()  # pg_restore --no-owner --no-acl: the superuser owns all
    say("  owners and grants: each database its role's (roles.psql)")
    for store in manifest.stores:
        t0, source = time.monotonic(), staging / "stores" / store
        source.mkdir(parents=True, exist_ok=True)  # an empty store has no member
        target.write_store(store, source)
        say(f"  store {store}: restored in {time.monotonic() - t0:.1f} s")


def _refuse_busy(target: Target, names: list[str]) -> None:
    quoted = ", ".join(f"'{name}'" for name in names)
    rows = target.query(
        "SELECT datname, count(*) FROM pg_stat_activity "
        f"WHERE datname IN ({quoted}) GROUP BY datname"
    )
    if rows:
        busy = ", ".join(f"{name} ({count})" for name, count in rows)
        raise TargetError(f"the databases are in use: {busy} connections; stop the stack first")


def upgrade(target: Target, out: Path, say: Progress = progress) -> Manifest:
    """With the stack stopped (but PostgreSQL): a backup, then the migrations. The caller
    starts the stack."""
    target.stop_services()
    manifest = backup(target, out, say)
    target.open()
    try:
        target.apply_roles()  # the migrations run as the services' roles
        say("roles, owners and grants in place (roles.psql)")
        t0 = time.monotonic()
        say("running Prefect's and MLflow's migrations")
        target.migrate()
        say(f"migrations done in {time.monotonic() - t0:.1f} s")
    finally:
        target.close()
    return manifest


def detect(compose: list[str]) -> str:
    """`compose` when the Compose project has a postgres container, else `dev`."""
    try:
        found = ComposeTarget(compose).compose("ps", "--all", "--quiet", "postgres").strip()
    except (TargetError, OSError):
        return "dev"
    return "compose" if found else "dev"


def make_target(kind: str, compose: list[str]) -> Target:
    if kind == "compose":
        return ComposeTarget(compose)
    return DevTarget(LocalStack.from_settings(DevSettings(), echo=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.backup", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("backup", "restore", "upgrade"))
    parser.add_argument(
        "--file", type=Path, help="the archive (backup, upgrade: default backups/<UTC time>.tar.gz)"
    )
    parser.add_argument(
        "--stack",
        choices=("compose", "dev"),
        help="default: compose when its project has a postgres container, else dev",
    )
    args = parser.parse_args(argv)
    compose = shlex.split(os.environ.get("COMPOSE") or "docker compose")
    kind = args.stack or detect(compose)
    if not args.stack:
        progress(f"stack: {kind} (detected; set STACK=compose or STACK=dev to choose)")
    target = make_target(kind, compose)
    try:
        if args.command == "restore":
            if args.file is None:
                parser.error("restore needs the archive: make restore FILE=backups/<time>.tar.gz")
            restore(target, args.file)
            progress("start the stack: " + ("make up" if kind == "compose" else "make dev"))
            return 0
        out = args.file or default_archive()
        if args.command == "backup":
            backup(target, out)
            return 0
        upgrade(target, out)
        progress("starting the stack")
        target.start()
        return 0
    except (ArchiveError, TargetError) as error:
        progress(f"ERROR: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
