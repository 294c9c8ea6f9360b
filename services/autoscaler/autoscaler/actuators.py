"""What the autoscaler acts through: agent containers of the Compose `agent` service (Docker
Engine API) or agent processes (local mode). Both list agents oldest first, tell which agent
a worker name (the label Prefect's worker puts on each run it takes) belongs to, start
agents, and stop one with SIGTERM and a grace period. They also start standby agents (warm,
not polling: AGENT_STANDBY) and promote one to an agent with SIGUSR1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from common.agents import AGENT_MODULE, STANDBY, STANDBY_ENV, agent_name_prefix, read_state

logger = logging.getLogger("autoscaler")


class Standby(NamedTuple):
    name: str
    ready: bool
    """Warm and waiting; False while it still imports (a promotion then takes effect once
    it is warm)."""


class Actuator(Protocol):
    acts: bool  # False: decisions are exported, not carried out

    def agents(self) -> list[str]:
        """The agents that count: started or running, not being stopped; oldest first."""

    def standbys(self) -> list[Standby]:
        """Standby agents: started, not promoted, not being stopped."""

    def owner(self, worker_name: str) -> str | None:
        """Our live agent that runs as the Prefect worker `worker_name`; None if none is."""

    def claims(self, worker_name: str) -> bool:
        """Whether `worker_name` is, or was, one of our agents: if it has no owner now, it
        is gone, and nothing it ran can still be running."""

    def start(self, count: int, standby: bool = False) -> None: ...

    def promote(self, standby: str) -> None:
        """Make a standby agent an agent: its worker starts polling."""

    def stop(self, agent: str) -> None:
        """SIGTERM now, SIGKILL after the grace period; returns at once. Agents and standby
        agents alike."""

    def close(self) -> None:
        """The autoscaler is stopping."""


class MetricsOnly:
    """Starts and stops nothing: the backlog and the desired count are only exported on
    /metrics, and something else acts on them (in Kubernetes, a KEDA ScaledObject scales the
    agent Deployment; see deploy/kubernetes/)."""

    acts = False

    def agents(self) -> list[str]:
        return []

    def standbys(self) -> list[Standby]:
        return []

    def owner(self, worker_name: str) -> str | None:
        return None

    def claims(self, worker_name: str) -> bool:
        return False  # not ours to recover: Prefect's zombie automation covers them

    def start(self, count: int, standby: bool = False) -> None:
        raise RuntimeError("the metrics-only backend starts no agents")

    def promote(self, standby: str) -> None:
        raise RuntimeError("the metrics-only backend has no standby agents")

    def stop(self, agent: str) -> None:
        raise RuntimeError("the metrics-only backend stops no agents")

    def close(self) -> None:
        pass


class ProcessActuator:
    """Agents as child processes (`python -m agent`), for `make dev` and the tests. Each
    agent's name is its Prefect worker name."""

    acts = True

    def __init__(self, env: dict[str, str], grace: float) -> None:
        self.env = env
        self.grace = grace
        self.name_prefix = f"{agent_name_prefix(socket.gethostname())}{os.getpid()}-"
        self.started = 0
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.standby: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
        self.state_dir = Path(tempfile.mkdtemp(prefix="agent-states-"))

    def agents(self) -> list[str]:
        self._reap()
        return list(self.running)

    def standbys(self) -> list[Standby]:
        self._reap()
        return [
            Standby(name, read_state(self._state_file(name)) == STANDBY) for name in self.standby
        ]

    def owner(self, worker_name: str) -> str | None:
        return worker_name if worker_name in self.running or worker_name in self.stopping else None

    def claims(self, worker_name: str) -> bool:
        return worker_name.startswith(self.name_prefix)

    def start(self, count: int, standby: bool = False) -> None:
        for _ in range(count):
            self.started += 1
            name = f"{self.name_prefix}{self.started}"
            process = subprocess.Popen(
                [sys.executable, "-m", AGENT_MODULE],
                env={
                    **self.env,
                    "AGENT_NAME": name,
                    STANDBY_ENV: str(standby).lower(),
                    "AGENT_STATE_FILE": self._state_file(name),
                },
                # Its own session: a Ctrl-C meant for `make dev` reaches us, and we stop it.
                start_new_session=True,
            )
            (self.standby if standby else self.running)[name] = process
            logger.info("started %s%s (pid %d)", "standby " if standby else "", name, process.pid)

    def promote(self, standby: str) -> None:
        process = self.standby.pop(standby)
        process.send_signal(signal.SIGUSR1)
        self.running[standby] = process
        logger.info("promoted standby %s", standby)

    def stop(self, agent: str) -> None:
        process = self.running.pop(agent, None) or self.standby.pop(agent)
        # The worker stops polling on SIGTERM; its fork server exits once the worker is gone.
        process.send_signal(signal.SIGTERM)
        self.stopping[agent] = (process, time.monotonic() + self.grace)
        logger.info("stopping %s (SIGTERM, %.0f s grace)", agent, self.grace)

    def close(self, timeout: float = 10) -> None:
        """Stop every agent: they are our children. Within `timeout`, then SIGKILL, so that
        whoever stops us (make dev waits 20 s, and a last poll may take a few) never leaves
        them behind."""
        for agent in [*self.running, *self.standby]:
            self.stop(agent)
        deadline = time.monotonic() + timeout
        while self.stopping and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.2)
        for name, (process, _) in self.stopping.items():
            logger.warning("%s still up at shutdown: SIGKILL", name)
            _kill_group(process.pid)
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def _state_file(self, name: str) -> str:
        return str(self.state_dir / f"{name}.state")

    def _reap(self) -> None:
        for group in (self.running, self.standby):
            for name, process in list(group.items()):
                if process.poll() is not None:
                    # Dropped from the count, so the next decision replaces it if still
                    # needed. What is left of it (its fork server, engines) goes too: its
                    # runs are then surely dead, and recovery may crash and reschedule them.
                    logger.warning("%s exited by itself (code %s)", name, process.returncode)
                    _kill_group(process.pid)
                    del group[name]
        for name, (process, deadline) in list(self.stopping.items()):
            if process.poll() is not None:
                logger.info("%s stopped (code %s)", name, process.returncode)
                del self.stopping[name]
            elif time.monotonic() > deadline:
                logger.warning("%s still up after the grace period: SIGKILL", name)
                _kill_group(process.pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # nothing left of it
        os.killpg(pgid, signal.SIGKILL)


COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
LIVE_STATUSES = {"created", "running", "restarting"}


class DockerActuator:
    """Agents as containers of the Compose `agent` service, made like Compose makes them:
    a copy of an existing one with the next container number. They carry the project's
    labels, so `docker compose ps` lists them and `docker compose down` removes them.

    A standby container is named <project>-<service>-standby-<number>, and renamed to
    <project>-<service>-<number> when promoted: the name is the state, so a restarted
    autoscaler reads it back. It is ready once its healthcheck (agent.health) passes."""

    acts = True

    def __init__(self, client: Any, project: str, service: str, grace: float) -> None:
        self.client = client  # docker.DockerClient
        self.project = project
        self.service = service
        self.grace = grace
        self.hosts: dict[str, str] = {}  # container name -> its hostname
        self.seen_hosts: set[str] = set()  # hostnames of every agent container seen
        self.template: dict[str, Any] | None = None  # `docker inspect` of one agent
        self.live: list[Any] = []  # the containers as last listed
        self.stopping: set[str] = set()
        self.lock = threading.Lock()

    def agents(self) -> list[str]:
        self.live = self._live()
        self.hosts = {c.name: c.attrs["Config"]["Hostname"] for c in self.live}
        with self.lock:
            return [
                c.name
                for c in self.live
                if not self._is_standby(c.name) and c.name not in self.stopping
            ]

    def standbys(self) -> list[Standby]:
        """As listed by the last agents(): one listing per poll (it inspects every container)."""
        with self.lock:
            return [
                Standby(c.name, c.attrs["State"].get("Health", {}).get("Status") == "healthy")
                for c in self.live
                if self._is_standby(c.name) and c.name not in self.stopping
            ]

    def owner(self, worker_name: str) -> str | None:
        # An agent container keeps its default name, agent-<container hostname>-<pid>.
        return next(
            (
                name
                for name, host in self.hosts.items()
                if worker_name.startswith(agent_name_prefix(host))
            ),
            None,
        )

    def claims(self, worker_name: str) -> bool:
        return any(worker_name.startswith(agent_name_prefix(h)) for h in self.seen_hosts)

    def start(self, count: int, standby: bool = False) -> None:
        if self.template is None:
            raise RuntimeError(
                f"no container of service {self.service!r} in project {self.project!r} to "
                f"copy: start one with `docker compose up -d {self.service}`"
            )
        numbers = [int(c.labels.get(COMPOSE_NUMBER, 0)) for c in self._containers()]
        next_number = max(numbers, default=0) + 1
        for number in range(next_number, next_number + count):
            name = self._create(self.template, number, standby)
            logger.info("started %s", name)

    def promote(self, standby: str) -> None:
        container = self.client.containers.get(standby)
        container.kill(signal="SIGUSR1")
        # Renamed after the signal: should we stop in between, a promoted agent that is
        # still named a standby is promoted again (a no-op), not left idle.
        number = container.labels.get(COMPOSE_NUMBER, "0")
        container.rename(self._name(int(number), standby=False))
        logger.info("promoted %s", standby)

    def stop(self, agent: str) -> None:
        with self.lock:
            self.stopping.add(agent)
        logger.info("stopping %s (SIGTERM, %.0f s grace)", agent, self.grace)
        threading.Thread(target=self._stop_and_remove, args=(agent,), daemon=True).start()

    def close(self) -> None:
        """Leave the agents running: they are Compose's; `docker compose down` removes them."""
        self.client.close()

    def _containers(self) -> list[Any]:
        labels = [f"{COMPOSE_PROJECT}={self.project}", f"{COMPOSE_SERVICE}={self.service}"]
        return self.client.containers.list(all=True, filters={"label": labels})

    def _live(self) -> list[Any]:
        """Live containers of the service, oldest first; remembers their hostnames and the
        newest one as the template of the next."""
        containers = self._containers()
        self.seen_hosts.update(c.attrs["Config"]["Hostname"] for c in containers)
        live = [c for c in containers if c.status in LIVE_STATUSES]
        live.sort(key=lambda c: (c.attrs["Created"], c.name))
        if live:
            self.template = live[-1].attrs
        return live

    def _name(self, number: int, standby: bool) -> str:
        return f"{self.project}-{self.service}-{'standby-' if standby else ''}{number}"

    def _is_standby(self, name: str) -> bool:
        return name.startswith(f"{self.project}-{self.service}-standby-")

    def _create(self, template: dict[str, Any], number: int, standby: bool) -> str:
        api = self.client.api
        config, host_config = template["Config"], template["HostConfig"]
        name = self._name(number, standby)
        # The template may be a standby, or not: the new one says what it is.
        env = [e for e in config["Env"] if not e.startswith(f"{STANDBY_ENV}=")]
        env.append(f"{STANDBY_ENV}={str(standby).lower()}")
        networks = template["NetworkSettings"]["Networks"]
        first, *others = networks
        endpoint = api.create_endpoint_config(aliases=[self.service, name])
        created = api.create_container(
            image=config["Image"],
            command=config["Cmd"],
            entrypoint=config["Entrypoint"],
            environment=env,
            user=config["User"],
            working_dir=config["WorkingDir"],
            labels={**config["Labels"], COMPOSE_NUMBER: str(number)},
            healthcheck=config.get("Healthcheck"),
            stop_signal=config.get("StopSignal"),
            # Compose's stop_grace_period: `docker compose stop` gives a clone the same time.
            stop_timeout=config.get("StopTimeout"),
            # As inspected: mounts, restart policy, network mode and the rest, like Compose's.
            host_config=host_config,
            networking_config=api.create_networking_config({first: endpoint}),
            name=name,
        )
        for network in others:
            api.connect_container_to_network(created["Id"], network, aliases=[self.service])
        api.start(created["Id"])
        return name

    def _stop_and_remove(self, agent: str) -> None:
        try:
            container = self.client.containers.get(agent)
            container.stop(timeout=int(self.grace))
            container.remove()
            logger.info("%s stopped and removed", agent)
        except Exception:
            logger.exception("could not stop %s", agent)
        finally:
            with self.lock:
                self.stopping.discard(agent)
