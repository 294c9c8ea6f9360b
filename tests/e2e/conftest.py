"""The Compose stack on a real Docker engine, for the end-to-end tests (`make e2e`).

One stack for the session, under its own project name and env file, built from the working
tree; always taken down with its volumes, with every service's logs printed on failure.
Everything is reached through the front door (the gateway, the one published port, TLS with a
certificate the session makes), with the stack's key as bearer: `Compose.http`,
`Compose.api()` and `Compose.prefect()` are clients that trust the certificate and send it.
"""

import json
import os
import secrets
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.tls import default_names, write_self_signed
from testkit.prefect_api import PrefectApi

REPO = Path(__file__).resolve().parents[2]
PROJECT = "stack-e2e"
# The door's name inside Docker networks (its Compose service), in the run's certificate too.
DOOR_NAME = "gateway"
# The front door, and each service behind it.
DOOR = "https://127.0.0.1:8443"
API = f"{DOOR}/api"
PREFECT = f"{DOOR}/prefect/api"
PREFECT_UI = f"{DOOR}/prefect"
MLFLOW = f"{DOOR}/mlflow"
SERVING = f"{DOOR}/serving"
ARTIFACTS = REPO / "tests" / "e2e" / "artifacts"
STARTUP_SECONDS = 600
# Figures the tests measure (image sizes, timings, fault recoveries): shown at the end of the
# run, since pytest keeps a passing test's output to itself.
FIGURES: list[str] = []


def figure(line: str) -> None:
    FIGURES.append(line)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section("e2e figures")
        for line in FIGURES:
            terminalreporter.write_line(line)


AUTOSCALER_MAX_AGENTS = 3
AUTOSCALER_STANDBY_AGENTS = 1


class Compose:
    def __init__(
        self,
        env_file: Path,
        project: str = PROJECT,
        files: tuple[str, ...] = ("docker-compose.yaml",),
    ) -> None:
        self.env_file, self.project, self.files = env_file, project, files
        # Where the session's fixture records the containers' `create` events (`events()`).
        self.events_file: Path | None = None
        env = _read_env(env_file)
        self.api_key = env["API_KEY"]
        self.auth = {"Authorization": f"Bearer {self.api_key}"}
        # The door's certificate, the only one these clients trust.
        self.certificate = Path(env["TLS_CERT_FILE"])
        self.tls = ssl.create_default_context(cafile=str(self.certificate))
        # Any service behind the door, with the stack's key (absolute URLs).
        self.http = httpx.Client(headers=self.auth, verify=self.tls, timeout=30)

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        files = [option for name in self.files for option in ("-f", name)]
        command = [
            "docker", "compose", "-p", self.project, *files, "--env-file", str(self.env_file), *args
        ]  # fmt: skip
        result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result.stdout

    def reset(self) -> None:
        """Remove what a run that was killed left under this project: its containers (the
        autoscaler's agents too) and its volumes, whose database holds another run's password."""
        self.run("down", "-v", "--remove-orphans", timeout=300)

    def image_sizes(self) -> dict[str, int]:
        """Bytes of each image the stack builds, by service."""
        config = json.loads(self.run("config", "--format", "json"))
        sizes = {}
        for name, service in sorted(config["services"].items()):
            if "build" in service:
                out = subprocess.run(
                    ["docker", "image", "inspect", "--format", "{{.Size}}", service["image"]],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                sizes[name] = int(out.stdout.strip())
        return sizes

    def events(self) -> list[dict]:
        """The project's containers' `create` events since the session began, in order, as
        `docker events --format '{{json .}}'` gives them (`Action`, `Actor.Attributes.name`,
        `timeNano`)."""
        if self.events_file is None:
            raise RuntimeError("this stack's events are not recorded (the compose fixture does)")
        lines = self.events_file.read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def containers(self) -> list[dict]:
        """The project's containers. `compose ps` lists, then inspects each: a container the
        autoscaler removes in between makes it fail ("No such container"), so ask again."""
        for attempt in range(5):
            try:
                out = self.run("ps", "--all", "--format", "json")
                break
            except RuntimeError as error:
                if "No such container" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.5)
        lines = [line for line in out.splitlines() if line.strip()]
        return [json.loads(line) for line in lines]

    def wait_healthy(
        self,
        timeout: float = STARTUP_SECONDS,
        services: tuple[str, ...] = ("server", "mlflow", "agent", "autoscaler", "api", "serving"),
    ) -> None:
        """`services` healthy (every container of each); the trainer exited 0."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {}
            for c in self.containers():
                states.setdefault(c["Service"], []).append(c)
            trainer = states.get("trainer", [])
            if trainer and trainer[0]["State"] == "exited" and trainer[0]["ExitCode"] != 0:
                raise RuntimeError("the trainer exited non-zero:\n" + self.run("logs", "trainer"))
            healthy = all(
                states.get(s) and all(c["Health"] == "healthy" for c in states[s]) for s in services
            )
            if healthy and trainer and trainer[0]["State"] == "exited":
                return
            time.sleep(2)
        raise TimeoutError(f"stack not healthy after {timeout:.0f} s: {self.containers()}")

    def api(self) -> httpx.Client:
        """Our API through the door, with the stack's key."""
        return httpx.Client(base_url=API, headers=self.auth, verify=self.tls, timeout=30)

    def client(self, **options) -> httpx.Client:
        """A client of the door that trusts its certificate and sends no credentials."""
        return httpx.Client(verify=self.tls, timeout=30, **options)

    def prefect(self, headers: dict[str, str] | None = None) -> PrefectApi:
        """Prefect's API through the door (the stack's key unless `headers` say otherwise)."""
        return PrefectApi(
            PREFECT, headers=self.auth if headers is None else headers, verify=self.tls
        )


def _read_env(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def write_env(env_file: Path) -> Path:
    """A .env with fresh random secrets, a new certificate for the door (as `make env` makes
    one), and settings that keep the tests quick. The certificate also names `gateway`: the
    teammate's laptop and the door's benchmark reach the door by that name."""
    cert, key = env_file.parent / "gateway.crt", env_file.parent / "gateway.key"
    write_self_signed(cert, key, [*default_names(), DOOR_NAME])
    env_file.write_text(
        f"TLS_CERT_FILE={cert}\nTLS_KEY_FILE={key}\nTLS_KEY_GID={key.stat().st_gid}\n"
        f"POSTGRES_PASSWORD={secrets.token_hex(16)}\n"
        f"PREFECT_DB_PASSWORD={secrets.token_hex(16)}\n"
        f"MLFLOW_DB_PASSWORD={secrets.token_hex(16)}\n"
        f"APP_DB_PASSWORD={secrets.token_hex(16)}\n"
        f"API_KEY={secrets.token_urlsafe(32)}\n"
        f"PREFECT_API_AUTH_STRING=prefect:{secrets.token_hex(16)}\n"
        "SYNTHETIC_ROWS=20000\n"
        "DEFAULT_DATA_SOURCE=synthetic\n"
        # Quick decisions, so that a burst scales up and back down within the test.
        f"AUTOSCALER_MAX_AGENTS={AUTOSCALER_MAX_AGENTS}\n"
        f"AUTOSCALER_STANDBY_AGENTS={AUTOSCALER_STANDBY_AGENTS}\n"
        "AGENT_LIMIT=2\n"
        "AUTOSCALER_POLL_SECONDS=1\n"
        "AUTOSCALER_SCALE_DOWN_COOLDOWN_SECONDS=10\n"
        f"DOCKER_GID={os.stat('/var/run/docker.sock').st_gid}\n"
        # The burst test sends 100 requests at once with one key (testkit.faults), and the
        # door's benchmark (bench/door.py) hundreds a second, for seconds.
        "API_RATE_LIMIT_PER_SECOND=100000\n"
        "API_RATE_LIMIT_BURST=100000\n"
        "SERVING_POLL_SECONDS=1\n"
    )
    return env_file


@pytest.fixture(scope="session")
def compose(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    stack = Compose(write_env(tmp_path_factory.mktemp("e2e") / ".env"))
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    # When each container was created, from the start (the engine keeps only its last 256
    # events, and health checks run as execs), for the start-up order's test.
    stack.events_file = tmp_path_factory.mktemp("e2e-events") / "events.jsonl"
    events = subprocess.Popen(
        ["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
         "--filter", f"label=com.docker.compose.project={stack.project}",
         "--filter", "event=create"],
        stdout=stack.events_file.open("w"),
    )  # fmt: skip
    try:
        stack.reset()
        stack.run("build", timeout=1800)
        built = time.monotonic()
        stack.sizes = stack.image_sizes()
        figure("image sizes: " + ", ".join(f"{n} {b / 1e6:.0f} MB" for n, b in stack.sizes.items()))
        # Cold start from built images: fresh volumes, migrations, registration, agents.
        # --wait: every long-running service has a healthcheck, and Compose waits for all.
        stack.run("up", "-d", "--wait", "--wait-timeout", "600", timeout=700)
        stack.wait_healthy()
        healthy = time.monotonic()
        stack.timings = {"build": built - started, "cold_start_to_healthy": healthy - built}
        figure(f"timings: {stack.timings}")
        yield stack
    finally:
        if request.session.testsfailed or os.environ.get("E2E_PRINT_LOGS"):
            print(stack.run("logs", "--no-color", "--tail", "200", check=False))
        stack.run("down", "-v", "--remove-orphans", check=False, timeout=300)
        events.terminate()
        events.wait(timeout=10)


@pytest.fixture(scope="session")
def api(compose: Compose) -> Iterator[httpx.Client]:
    with compose.api() as client:
        yield client
