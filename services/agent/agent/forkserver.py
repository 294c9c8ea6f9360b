"""The agent's fork server: start each flow run from a warm, pre-imported process.

`python -m agent` starts `python -m agent.forkserver --socket PATH` before it becomes the
Prefect worker. The fork server imports Prefect, the engine's dependencies and the flows
(pandas, pyarrow, scikit-learn) once, then listens on a Unix socket. For each launcher
(agent.launch, the runs' job command) it forks a child that takes the launcher's
environment, working directory and stdio, and runs the engine (agent.engine: `prefect.engine`
as `__main__`, as `python -m prefect.engine` would) without the seconds of imports. It reports the
child's pid, relays the launcher's signals to it, kills it if the launcher vanishes, and
reports its exit status.

Forking is only safe while this process has a single Python thread (a lock held by another
thread would stay locked forever in the child), so the server is one thread with one
selector loop, and checks before every fork. The native threads that the data libraries
start at import (OpenBLAS, jemalloc) have fork handlers of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from agent import engine, tls
from agent.prefect_settings import SettingsCache, use_settings
from agent.protocol import (
    RELAYED_SIGNALS,
    STDIO_FDS,
    FrameDecoder,
    ProtocolError,
    encode_frame,
    listening,
    refusal,
)
from common.contract import RUN_MODULES

# What a run imports, loaded once before any fork: Prefect's engine and what it imports
# lazily, then the flows with their data stack. A module that fails here is only logged:
# the run imports it itself (and fails there, where Prefect reports it).
PRELOAD = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.flows",
    "prefect.task_engine",
    "prefect._internal.metrics",
    "prefect._internal.control_listener",
    "prefect.client.orchestration",
    "prefect.logging.handlers",
    "prefect.events.worker",
    "prefect.results",
    "prefect.artifacts",
    "prefect.runtime.flow_run",
    "prefect._internal.observers",
    "prefect._vendor.croniter",
    "anyio._backends._asyncio",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "anyio.streams.tls",
    "rich._emoji_codes",
    # Subflow calls: parameter encoding and the flow graph.
    "fastapi.encoders",
    "prefect.utilities.visualization",
    *RUN_MODULES,  # the flows, with their data stack (common.contract)
    # What reading, writing and fitting load on first use.
    "pyarrow.pandas_compat",
    "pyarrow.dataset",
    "fsspec.implementations.local",
    "fsspec.implementations.chained",
    "narwhals._pandas_like.dataframe",
    "narwhals._pandas_like.namespace",
)
# A launcher sends its request at once; one that stalls must not stall the server.
REQUEST_TIMEOUT_SECONDS = 5.0
# How often the loop wakes without events: to notice that the agent has gone.
IDLE_SECONDS = 1.0


def log(text: str) -> None:
    # Plain stderr, not `logging`: a root handler set up here would change how Prefect
    # configures logging in every child.
    print(f"agent.forkserver: {text}", file=sys.stderr, flush=True)


def complete_models(prefix: str = "prefect.") -> int:
    """Build now the schemas that pydantic defers to a model's first use, for the models of
    modules under `prefix` (Prefect's: FlowRun, DeploymentResponse, FlowRunUpdate, event
    filters, ...); returns how many it built.

    Prefect's models refer to one another ahead of their definition, so pydantic completes
    many on first use, from the same modules' namespaces. Left to the engines, every forked
    engine built them again (FlowRun as it read its run, the deployment as it loaded the
    flow). Built here, before any fork, the children find them built. A model that cannot be
    built yet is left to its first use, as before.
    """
    from pydantic import BaseModel

    built, pending = 0, list(BaseModel.__subclasses__())
    while pending:
        model = pending.pop()
        pending.extend(model.__subclasses__())
        if model.__module__.startswith(prefix) and not model.__dict__.get(
            "__pydantic_complete__", True
        ):
            with contextlib.suppress(Exception):
                built += bool(model.model_rebuild())
    return built


@dataclass
class Job:
    """One engine to become, in a freshly forked child."""

    env: dict[str, str]
    cwd: str
    fds: dict[int, int]  # stdio descriptor (0, 1, 2) -> the launcher's, received
    ignored: list[int]  # signals the launcher inherited as ignored
    settings: Any = None  # Prefect's settings context for env and cwd, when built already


@dataclass
class _Run:
    pid: int
    conn: socket.socket
    run_id: str
    started: float
    watched: bool = False  # registered with the selector
    decoder: FrameDecoder = field(default_factory=FrameDecoder)


class ForkServer:
    """Preloads, listens on `path`, and forks one child per launcher request."""

    def __init__(self, path: str, preload: tuple[str, ...] = PRELOAD) -> None:
        self.path = path
        self.preload = preload
        self.pid = os.getpid()
        self.parent_pid = os.getppid()
        # The environment the imports see: a run must not need a different one at import.
        self.env = dict(os.environ)
        self.runs: dict[int, _Run] = {}
        self.settings = SettingsCache()
        self.stopping = False
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = os.pipe()

    # -- lifecycle ---------------------------------------------------------------------

    def serve(self) -> Job | None:
        """Serve until the agent is gone and no run is left.

        Returns only in a forked child, with the job that child is to run; the server
        itself returns None.
        """
        try:
            self._install_signals()
            self._preload()
            self._listen()
            return self._loop()
        finally:
            if os.getpid() == self.pid:
                self._close()

    def _install_signals(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        # Signal handlers only set flags; the wakeup fd makes the selector return at once.
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_stop)
        # A terminal's Ctrl-C reaches the whole process group: the worker decides what
        # happens to the runs, and we stop once it has gone.
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    def _on_stop(self, *_: object) -> None:
        self.stopping = True

    def _preload(self) -> None:
        start = time.monotonic()
        for name in self.preload:
            try:
                importlib.import_module(name)
            except Exception as exc:  # a run imports it again, and reports it properly
                log(f"cannot preload {name}: {exc!r}")
        # Prefect's clients share one loaded CA bundle; the engines find it loaded.
        tls.install()
        tls.warm()
        complete_models()
        # Move everything imported so far out of the collector's reach: children then do
        # not touch (and copy) those pages when they collect.
        gc.collect()
        gc.freeze()
        log(f"preloaded {len(sys.modules)} modules in {time.monotonic() - start:.1f} s")

    def _listen(self) -> None:
        if os.path.exists(self.path):
            if listening(self.path):
                raise RuntimeError(f"another fork server listens on {self.path}")
            os.unlink(self.path)  # left by a server that died
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # only this user may start runs in our name
        try:
            listener.bind(self.path)
        finally:
            os.umask(umask)
        listener.listen(64)
        listener.setblocking(False)
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        log(f"ready on {self.path} (pid {self.pid})")

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            log(f"stopped listening; waiting for {len(self.runs)} runs")

    def _close(self) -> None:
        self._stop_listening()
        for run in self.runs.values():
            run.conn.close()
        self._selector.close()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> Job | None:
        while True:
            if os.getppid() != self.parent_pid:
                self.stopping = True  # the agent (the worker) has gone
            if self.stopping:
                self._stop_listening()
                if not self.runs:
                    return None
            for key, _ in self._selector.select(IDLE_SECONDS):
                if key.data == "accept":
                    job = self._accept()
                    if job is not None:
                        return job
                elif key.data == "wake":
                    _drain(self._wake_r)
                else:
                    self._on_launcher(key.data)
            self._reap()

    def _accept(self) -> Job | None:
        assert self._listener is not None
        try:
            conn, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.settimeout(REQUEST_TIMEOUT_SECONDS)
        fds: list[int] = []
        try:
            request, fds = _read_request(conn)
            reason = refusal(request, self.env, sys.prefix)
            if reason is None and len(fds) != len(request["fds"]):
                reason = f"received {len(fds)} descriptors for {request['fds']}"
            if reason is None and threading.active_count() != 1:
                reason = f"{threading.active_count()} threads run in the fork server"
            if reason is not None:
                log(f"declined a run: {reason}")
                conn.sendall(encode_frame({"error": reason}))
                conn.close()
                return None
            run_id = request["env"].get("PREFECT__FLOW_RUN_ID", "?")
            job = Job(
                env=request["env"],
                cwd=request["cwd"],
                fds=dict(zip(request["fds"], fds, strict=True)),
                ignored=request["ignored"],
                settings=self.settings.get(request["env"], request["cwd"]),
            )
            # Nothing buffered may be written twice, by us and by the child.
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except ListenProbe:
            conn.close()
            return None
        except (OSError, ProtocolError) as exc:
            log(f"bad request: {exc!r}")
            conn.close()
            _close_all(fds)
            return None
        if pid == 0:
            self._become_child(conn)
            return job
        _close_all(fds)
        run = _Run(pid=pid, conn=conn, run_id=run_id, started=time.monotonic())
        self.runs[pid] = run
        try:
            conn.sendall(encode_frame({"pid": pid}))
        except OSError:
            log(f"flow run {run_id}: launcher gone before the start; killing pid {pid}")
            _kill(pid, signal.SIGKILL)
            return None
        conn.setblocking(False)
        self._selector.register(conn, selectors.EVENT_READ, run)
        run.watched = True
        built = "" if job.settings is None else ", its Prefect settings built for an earlier run"
        log(f"flow run {run_id}: forked engine pid {pid}{built}")
        if job.settings is None:
            self._build_settings(job)
        return None

    def _build_settings(self, job: Job) -> None:
        """Build Prefect's settings for this run's inputs, for the runs after it (this one's
        engine builds its own)."""
        try:
            self.settings.build(job.env, job.cwd)
        except Exception as exc:  # the runs then build their own, as this one does
            log(f"cannot build Prefect's settings for later runs: {exc!r}")

    def _on_launcher(self, run: _Run) -> None:
        """A relayed signal, or the launcher's end (then the engine must not outlive it)."""
        try:
            data = run.conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            log(f"flow run {run.run_id}: launcher gone; killing engine pid {run.pid}")
            self._selector.unregister(run.conn)
            run.watched = False
            _kill(run.pid, signal.SIGKILL)
            return
        try:
            messages = run.decoder.feed(data)
        except ProtocolError as exc:
            log(f"flow run {run.run_id}: bad message from the launcher: {exc}")
            return
        for message in messages:
            signum = message.get("signal")
            if isinstance(signum, int):
                log(f"flow run {run.run_id}: relaying signal {signum} to pid {run.pid}")
                _kill(run.pid, signum)

    def _reap(self) -> None:
        while self.runs:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            run = self.runs.pop(pid, None)
            if run is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            log(
                f"flow run {run.run_id}: engine pid {pid} exited {code} "
                f"after {time.monotonic() - run.started:.1f} s"
            )
            if run.watched:
                self._selector.unregister(run.conn)
            try:
                run.conn.setblocking(True)
                run.conn.sendall(encode_frame({"exit": code}))
            except OSError:
                pass  # the launcher is gone: nobody to tell
            run.conn.close()

    # -- in the child ------------------------------------------------------------------

    def _become_child(self, conn: socket.socket) -> None:
        """Drop everything of the server's in a fresh child: it is about to be an engine."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self._selector.close()
        if self._listener is not None:
            self._listener.close()
        for run in self.runs.values():
            run.conn.close()
        self.runs.clear()
        conn.close()
        os.close(self._wake_r)
        os.close(self._wake_w)


class ListenProbe(Exception):
    """A connection closed without a byte: a check that we listen (agent.protocol.listening)."""


def _read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The launcher's request, and the descriptors that came with it."""
    decoder = FrameDecoder()
    data, fds, flags, _ = socket.recv_fds(conn, 65536, len(STDIO_FDS))
    if flags & socket.MSG_CTRUNC:
        _close_all(fds)
        raise ProtocolError("descriptors were truncated")
    if not data and not fds:
        raise ListenProbe
    try:
        while True:
            if not data:
                raise ProtocolError("connection closed before a whole request")
            messages = decoder.feed(data)
            if messages:
                return messages[0], fds
            data = conn.recv(65536)
    except BaseException:
        _close_all(fds)
        raise


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def become_engine(job: Job) -> None:
    """Turn this forked child into `python -m prefect.engine` for the job's run."""
    # Signal dispositions as a fresh interpreter gets them: inherited ignores stay ignored,
    # SIGINT raises KeyboardInterrupt, the rest take their default action.
    for signum in RELAYED_SIGNALS:
        if signum in job.ignored:
            signal.signal(signum, signal.SIG_IGN)
        elif signum == signal.SIGINT:
            signal.signal(signum, signal.default_int_handler)
        else:
            signal.signal(signum, signal.SIG_DFL)
    for target in STDIO_FDS:
        source = job.fds.get(target)
        if source is None:
            source = os.open(os.devnull, os.O_RDWR)
        os.dup2(source, target)
        os.close(source)
    # The run's environment replaces ours entirely, as in a process exec'd with it.
    os.environ.clear()
    os.environ.update(job.env)
    # The few process-wide caches of the environment outside Prefect: time zone, temp dir.
    time.tzset()
    tempfile.tempdir = None
    os.chdir(job.cwd)
    sys.path[0] = job.cwd  # what `python -m` puts first
    # Prefect read its settings at import, from the server's environment: the run's are
    # those built here for an earlier run with the same inputs, or built now.
    use_settings(job.settings)
    if "numpy" in sys.modules:
        # A fresh process seeds numpy's global generator from the OS; do not share ours.
        sys.modules["numpy"].random.seed()
    sys.argv[1:] = []
    # runpy warns because `import prefect` already imported prefect.engine; running it as
    # __main__ anyway is exactly what `python -m prefect.engine` does after that import.
    warnings.filterwarnings(
        "ignore", message=r"'prefect\.engine' found in sys\.modules", category=RuntimeWarning
    )
    engine.main()


def _ensure_stdio() -> None:
    # With 0-2 open, descriptors received later never land on them.
    for fd in STDIO_FDS:
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="Unix socket path to listen on")
    args = parser.parse_args(argv)
    _ensure_stdio()
    job = ForkServer(args.socket).serve()
    if job is not None:
        # In a forked child: from here on this process is the run's engine, and it ends
        # like one (exit code, traceback, atexit and thread shutdown as usual).
        become_engine(job)


if __name__ == "__main__":
    main()
