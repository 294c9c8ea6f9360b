"""Start, watch and stop the stack's services as local processes.

Each service runs the same command as its container (see SERVICE_COMMANDS), with the
environment a container would get, pointed at local paths and 127.0.0.1.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
from dotenv import dotenv_values
from pydantic import TypeAdapter
from sqlalchemy.engine import make_url

from common.agents import FORKSERVER_PID_ENV, FORKSERVER_SOCKET_ENV
from common.contract import DEFAULT_WORK_POOL
from common.restarts import next_restart_delay
from devstack.postgres import (
    PREFECT_DATABASE,
    ROLES,
    EmbeddedPostgres,
    app_database_name,
    apply_roles,
    asyncpg_url,
    ensure_database,
    role_passwords,
    role_url,
)
from devstack.settings import DevSettings

logger = logging.getLogger("devstack")

REPO = Path(__file__).resolve().parents[3]
BIN = Path(sys.executable).parent
# MLflow's server has an environment of its own (services/mlflow/requirements.lock): full
# mlflow pins SQLAlchemy 2.1, which Prefect's server cannot share. `make venv` creates it.
MLFLOW_BIN = REPO / ".venv-mlflow" / "bin"

# The command each container runs; local mode runs the same, from the venv.
SERVICE_COMMANDS: dict[str, list[str]] = {
    "server": ["prefect", "server", "start"],
    "trainer": ["python", "-m", "trainer.register"],
    "agent": ["python", "-m", "agent"],
    # The agents' shared fork server (the socket path follows): in Compose each agent
    # container starts its own, as `python -m agent` does without AGENT_FORKSERVER_PID.
    "forkserver": ["python", "-m", "agent.forkserver", "--socket"],
    # Runs in the agent image; in local mode it starts and stops agent processes itself.
    "autoscaler": ["python", "-m", "autoscaler"],
    "api": ["python", "-m", "api"],
    "mlflow": [str(MLFLOW_BIN / "python"), "-m", "mlflow_server"],
    "serving": ["python", "-m", "serving"],
}
SOURCE_DIRS = [
    REPO / "services" / name
    for name in ("common", "trainer", "agent", "autoscaler", "api", "serving")
]
MLFLOW_DATABASE = "mlflow"

T = TypeVar("T")


class StackError(RuntimeError):
    """A service that did not start, or stopped when it should not have."""


def wait_until(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.5) -> T:
    """`predicate()`'s first truthy value, polled every `interval` s; TimeoutError naming
    `what` after `timeout` s. While a server is away (refused, cut, or 5xx), not yet; any
    other error (a 4xx among them) is raised at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except httpx.TransportError:
            value = None
        except httpx.HTTPStatusError as error:
            if error.response.status_code < 500:
                raise
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class _Service:
    """How a long-running service was started, to start it again as Compose would."""

    command: list[str]
    env: dict[str, str] | None
    started: float
    delay: float | None = None  # the last restart delay
    restart_at: float | None = None  # when it exited: when it starts again


def _default_sigint() -> None:
    # A background shell starts us with SIGINT ignored, and children would inherit that:
    # Prefect's worker relays SIGTERM as SIGINT, so it would never exit.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class LocalStack:
    """Postgres, the Prefect server, the trainer's registration and agents, as processes."""

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 4200,
        api_port: int = 8000,
        mlflow_port: int = 5000,
        serving_port: int = 8001,
        database_url: str | None = None,
        echo: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.port = port
        self.api_port = api_port
        self.mlflow_port = mlflow_port
        self.serving_port = serving_port
        self.database_url = database_url
        self.echo = echo
        self.extra_env = extra_env or {}
        self.log_dir = self.state_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.services: dict[str, _Service] = {}
        self._agents = 0
        self._one_shots: set[str] = set()  # started, not yet waited for (finish_once)
        self.env: dict[str, str] = {}
        self.database_urls: dict[str, str] = {}
        # The superuser's URL on the maintenance database `postgres` (DATABASE_URL's own user
        # on its server): roles, backup and restore; no service connects with it.
        self.admin_url = ""

    @classmethod
    def from_settings(cls, settings: DevSettings, **kwargs: Any) -> "LocalStack":
        """`make dev`'s stack: on DevSettings' state directory, ports and database."""
        return cls(
            settings.state_dir,
            port=settings.prefect_server_api_port,
            api_port=settings.api_port,
            mlflow_port=settings.mlflow_server_port,
            serving_port=settings.serving_port,
            database_url=settings.database_url,
            **kwargs,
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def service_url(self) -> str:
        """Base URL of our API service."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def serving_url(self) -> str:
        return f"http://127.0.0.1:{self.serving_port}"

    @property
    def autoscaler_metrics_url(self) -> str:
        port = self.env.get("AUTOSCALER_METRICS_PORT", "9090")
        return f"http://127.0.0.1:{port}/metrics"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, *, agents: int = 1, autoscale: bool = False, mlflow: bool = True) -> None:
        """Start everything in dependency order; on any failure stop what started.

        `agents` fixed agents, and with `autoscale` the autoscaler, which starts and stops
        agents of its own (at least AUTOSCALER_MIN_AGENTS) as the backlog asks. Without
        `mlflow`, no registry and no serving: train-model only saves its model file.
        """
        try:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            ports = (
                self.port,
                self.api_port,
                *((self.mlflow_port, self.serving_port) if mlflow else ()),
            )
            for port in ports:
                _require_free_port(port)
            self.prepare(mlflow=mlflow)
            if mlflow:
                self.start_mlflow()
            self.start_service("server")
            self.wait_until(self._server_healthy, 90, "the Prefect server to answer /api/ready")
            # What needs only the server and the databases starts at once, side by side with
            # the registration: start-up is the longest of them, not their sum
            # (bench/startup.py). Agents wait for the registration's work pool, as in Compose.
            trainer = self.start_once("trainer")
            self.start_forkserver()
            self.start_service("api")
            if mlflow:
                self.wait_for_mlflow()
                self.start_service("serving")
            self.finish_once("trainer", trainer)
            for _ in range(agents):
                self.add_agent()
            if autoscale:
                self.start_autoscaler()
            self.wait_until(self._api_ready, 90, "the API to answer /readyz")
            if mlflow:
                self.wait_until(self._serving_alive, 90, "serving to answer /healthz")
        except BaseException:
            self.stop()
            raise

    def prepare(self, *, mlflow: bool = True) -> None:
        """PostgreSQL (embedded: started, or found running) with the stack's databases, and
        the services' environment, without the services: what `start` does first, and all
        that backup, restore and upgrade need (devstack.backup)."""
        prefect_db, app_db, mlflow_db = self._databases()
        self.database_urls = {"prefect": prefect_db, "app": app_db, "mlflow": mlflow_db}
        self.env = self._environment((prefect_db, app_db, mlflow_db), mlflow=mlflow)

    def stop(self) -> None:
        """Stop services in reverse start order (agents first), then Postgres."""
        for name in reversed(list(self.processes)):
            self._terminate(name, self.processes[name])
        self.processes.clear()
        self.services.clear()
        if self.postgres is not None:
            self.postgres.stop()
            self.postgres = None

    def start_mlflow(self) -> None:
        """Start MLflow's server (in its own environment); `start` waits for it at the end."""
        if not (MLFLOW_BIN / "python").exists():
            raise StackError(f"{MLFLOW_BIN.parent} is missing: run `make venv`")
        self.start_service("mlflow", env=self.mlflow_env)

    @property
    def mlflow_env(self) -> dict[str, str]:
        """What the mlflow service needs on top of the stack's environment."""
        return {
            "PATH": os.pathsep.join([str(MLFLOW_BIN), os.environ.get("PATH", "")]),
            "PYTHONPATH": str(REPO / "services" / "mlflow"),
            "MLFLOW_SERVER_HOST": "127.0.0.1",
            "MLFLOW_SERVER_PORT": str(self.mlflow_port),
        }

    def start_forkserver(self) -> None:
        """The one fork server this stack's agents share (agent.forkserver; `AGENT_FORKSERVER`
        false: none). A standby or extra agent then costs its worker alone, not another
        interpreter holding the runs' preloaded modules (bench/autoscale.py prints both).
        Its socket and pid go into the environment that agents, and the autoscaler's, get;
        it stops once we are gone and its runs have ended. In Compose each agent container
        keeps one of its own."""
        if not TypeAdapter(bool).validate_python(self.env.get("AGENT_FORKSERVER", "true")):
            return
        # Unique per stack (its Prefect port), and short: a socket path has ~100 bytes.
        path = str(Path(tempfile.gettempdir()) / f"stack-forkserver-{self.port}.sock")
        process = self.start_service("forkserver", [*SERVICE_COMMANDS["forkserver"], path])
        self.env[FORKSERVER_SOCKET_ENV] = path
        self.env[FORKSERVER_PID_ENV] = str(process.pid)

    def add_agent(self) -> str:
        """Start one more agent and wait until the server sees it online."""
        self._agents += 1
        name = f"agent-{self._agents}"
        # A worker that was not online before: on a restart, the last run's workers may
        # still count as online, and go offline meanwhile (a count could then never grow).
        before = set(self.online_workers())
        self.start_service(name, SERVICE_COMMANDS["agent"])
        self.wait_until(lambda: set(self.online_workers()) - before, 60, f"{name} to come online")
        return name

    def start_autoscaler(self, env: dict[str, str] | None = None, name: str = "autoscaler") -> None:
        """Start the autoscaler on local processes; wait for its first agent, if it keeps one.

        `env` adds to the stack's environment (another pool, other bounds)."""
        env = {**(env or {}), "AUTOSCALER_BACKEND": "process"}
        merged = {**self.env, **env}
        pool = merged.get("WORK_POOL_NAME") or DEFAULT_WORK_POOL
        before = set(self.online_workers(pool))
        self.start_service(name, SERVICE_COMMANDS["autoscaler"], env)
        if int(merged.get("AUTOSCALER_MIN_AGENTS", "1")) > 0:
            self.wait_until(
                lambda: set(self.online_workers(pool)) - before, 60, f"{name}'s first agent"
            )

    # -- processes -----------------------------------------------------------------------

    def start_service(
        self, name: str, command: list[str] | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start `name` (a service, or another process given its `command`); `env` adds to
        the stack's environment."""
        process = subprocess.Popen(
            command or SERVICE_COMMANDS[name],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=_default_sigint,
        )
        self.processes[name] = process
        previous = self.services.get(name)
        self.services[name] = _Service(
            command or SERVICE_COMMANDS[name],
            env,
            time.monotonic(),
            delay=previous.delay if previous else None,
        )
        threading.Thread(target=self._pump, args=(name, process.stdout), daemon=True).start()
        logger.info("started %s (pid %d)", name, process.pid)
        return process

    def run_once(self, name: str, timeout: float = 180, env: dict[str, str] | None = None) -> None:
        """Run a one-shot service to completion; it must exit 0. `env` adds to the stack's."""
        self.finish_once(name, self.start_once(name, env), timeout)

    def start_once(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start the one-shot service `name`; `finish_once` waits for it. Meanwhile its
        exit with 0 is not a service that stopped (`check_alive`)."""
        self._one_shots.add(name)
        return self.start_service(name, env=env)

    def finish_once(
        self, name: str, process: subprocess.Popen[bytes], timeout: float = 180
    ) -> None:
        """Wait for the one-shot `name`, started as `process`, to exit; it must exit 0."""
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise StackError(f"{name} did not finish within {timeout:.0f} s") from None
        finally:
            self._one_shots.discard(name)
            self.processes.pop(name, None)
            self.services.pop(name, None)  # one-shot: never restarted
        if code != 0:
            raise StackError(f"{name} exited {code}; see {self.log_dir / name}.log")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None and not (name in self._one_shots and process.poll() == 0):
                raise StackError(
                    f"{name} exited {process.returncode}; see {self.log_dir / name}.log"
                )

    def supervise(self) -> None:
        """Restart the services that have exited, as Compose's `restart: unless-stopped`
        does: after a delay that grows while a service keeps failing (agent.supervisor)."""
        now = time.monotonic()
        for name, process in list(self.processes.items()):
            service = self.services[name]
            if process.poll() is None:
                continue
            if service.restart_at is None:
                uptime = now - service.started
                service.delay = next_restart_delay(service.delay, uptime)
                service.restart_at = now + service.delay
                logger.warning(
                    "%s exited (code %s) after %.0f s; restarting it in %.0f s (log: %s)",
                    name,
                    process.returncode,
                    uptime,
                    service.delay,
                    self.log_dir / f"{name}.log",
                )
            elif now >= service.restart_at:
                self.start_service(name, service.command, service.env)

    def stop_service(self, name: str) -> None:
        process = self.processes.pop(name)
        self.services.pop(name, None)
        self._terminate(name, process)

    def _terminate(self, name: str, process: subprocess.Popen[bytes], grace: float = 20) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0f s: killing it", name, grace)
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        logger.info("stopped %s (exit %s)", name, process.returncode)

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        prefix = f"{name:>9} | ".encode()
        with open(self.log_dir / f"{name}.log", "ab") as log:
            for line in stream:
                log.write(line)
                log.flush()
                if self.echo:
                    sys.stdout.buffer.write(prefix + line)
                    sys.stdout.buffer.flush()

    def log_tails(self, lines: int = 60) -> str:
        """The end of every service's log, for a test that failed."""
        return "".join(
            f"\n===== {log.name} (last {lines} lines) =====\n"
            + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
            for log in sorted(self.log_dir.glob("*.log"))
        )

    # -- environment ---------------------------------------------------------------------

    def _databases(self) -> tuple[str, str, str]:
        """Libpq URLs of Prefect's database, the app's and MLflow's. On the embedded server,
        each is its own role's (roles.psql, as in Compose: made or brought up to date here);
        on DATABASE_URL's server, DATABASE_URL's user's, Prefect's and the app's databases
        created if absent, MLflow's by its server."""
        if self.database_url is None:
            self.postgres = EmbeddedPostgres(self.state_dir / "postgres")
            self.admin_url = self.postgres.url()
            passwords = role_passwords(self._dotenv() | dict(os.environ) | self.extra_env)
            apply_roles(self.admin_url, passwords)
            services = ("prefect", "app", "mlflow")
            prefect, app, mlflow = (role_url(self.admin_url, s, passwords) for s in services)
            return prefect, app, mlflow
        server_url = self.database_url
        self.admin_url = (
            make_url(server_url).set(database="postgres").render_as_string(hide_password=False)
        )
        mlflow_db = make_url(server_url).set(database=MLFLOW_DATABASE)
        return (
            ensure_database(server_url, PREFECT_DATABASE),
            ensure_database(server_url, app_database_name(self.database_url)),
            mlflow_db.render_as_string(hide_password=False),
        )

    def apply_roles(self) -> None:
        """roles.psql again on the embedded server (after a restore: owners and grants)."""
        if self.database_url is None:
            env = self._dotenv() | dict(os.environ) | self.extra_env
            apply_roles(self.admin_url, role_passwords(env) | self._passwords())

    def _passwords(self) -> dict[str, str]:
        """The passwords in the services' URLs now (so that a re-run keeps them)."""
        return {
            var: str(make_url(self.database_urls[service]).password or "")
            for service, (_, var) in ROLES.items()
            if service in self.database_urls
        }

    @staticmethod
    def _dotenv() -> dict[str, str]:
        return {k: v for k, v in dotenv_values(REPO / ".env").items() if v is not None}

    def _environment(self, databases: tuple[str, str, str], *, mlflow: bool) -> dict[str, str]:
        prefect_db, app_db, mlflow_db = databases
        # `.env` fills what the environment leaves unset, for every service (Prefect's own
        # PREFECT_* variables included), as compose's env_file does for containers.
        env = self._dotenv()
        env.update(os.environ)
        # Defaults the user may override (in the environment or .env) ...
        for name, default in store_defaults(self.state_dir).items():
            env.setdefault(name, default)
        # Local mode runs the API without keys unless one is configured; it warns loudly.
        env.setdefault("API_INSECURE_DEV_MODE", "false" if env.get("API_KEY") else "true")
        # ... and the wiring of the local processes, which they may not.
        env.update(
            {
                # The venv's `python` and `prefect` first, as the image's are in a container.
                "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),
                "PYTHONPATH": os.pathsep.join(str(d) for d in SOURCE_DIRS),
                "PREFECT_HOME": str(self.state_dir / "prefect"),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_URL": self.ui_url,
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
                "PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url(prefect_db),
                "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                # As the server image has them: log lines out, for the API's streams.
                "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
                "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
                "DATABASE_URL": app_db,
                "API_HOST": "127.0.0.1",
                "API_PORT": str(self.api_port),
                "MLFLOW_BACKEND_STORE_URI": mlflow_db,
                "SERVING_HOST": "127.0.0.1",
                "SERVING_PORT": str(self.serving_port),
            }
        )
        if mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow_url
            env["SERVING_URL"] = self.serving_url
        else:
            env.pop("MLFLOW_TRACKING_URI", None)
        env.update(self.extra_env)
        return env

    # -- readiness -----------------------------------------------------------------------

    def wait_until(self, ready: Callable[[], object], timeout: float, what: str) -> None:
        """`wait_until`, failing as soon as a service of the stack has exited; a timeout is a
        StackError (a service that did not start)."""

        def alive_and_ready() -> object:
            self.check_alive()
            return ready()

        try:
            wait_until(alive_and_ready, timeout, what, interval=0.3)
        except TimeoutError as error:
            raise StackError(str(error)) from None

    def _api_ready(self) -> bool:
        return httpx.get(f"{self.service_url}/readyz", timeout=2).status_code == 200

    def wait_for_mlflow(self, timeout: float = 120) -> None:
        self.wait_until(
            lambda: httpx.get(f"{self.mlflow_url}/health", timeout=2).status_code == 200,
            timeout,
            "the MLflow server to answer /health",
        )

    def _serving_alive(self) -> bool:
        return httpx.get(f"{self.serving_url}/healthz", timeout=2).status_code == 200

    def _server_healthy(self) -> bool:
        return httpx.get(f"{self.api_url}/ready", timeout=2).status_code == 200

    def online_workers(self, pool: str | None = None) -> list[str]:
        pool = pool or self.env.get("WORK_POOL_NAME") or DEFAULT_WORK_POOL
        response = httpx.post(
            f"{self.api_url}/work_pools/{pool}/workers/filter",
            json={"workers": {"status": {"any_": ["ONLINE"]}}},
            timeout=5,
        )
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return [worker["name"] for worker in response.json()]


def store_defaults(state_dir: Path) -> dict[str, str]:
    """Where local mode keeps its files, unless the environment (or .env) says otherwise."""
    return {
        "DATA_STORE_URL": str(state_dir / "data"),
        "MODEL_STORE_URL": str(state_dir / "models"),
        "MLFLOW_ARTIFACTS_DESTINATION": str(state_dir / "mlflow" / "artifacts"),
    }


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _require_free_port(port: int) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise StackError(
                f"port {port} is in use (another stack?): stop it, or set "
                "PREFECT_SERVER_API_PORT / API_PORT / MLFLOW_SERVER_PORT / SERVING_PORT"
            )
