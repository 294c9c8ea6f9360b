"""`python -m agent.engine`: a flow run's engine. Prefect's own (`python -m prefect.engine`),
with two repairs: one as it ends, one when it fails; and its Prefect calls ride out an
outage of the server (agent.outages).

As it ends: Prefect's sync engine, its flow run final, waits for its heartbeat thread, which
sleeps in steps of a second, so the process held its agent's slot up to a second longer
than its run (0.5 s on average, on every run). `heartbeats_not_joined` has it stop that
thread without waiting, as Prefect's async engine does (`_send_heartbeats(...,
join_on_exit=False)`): the thread ends at its next step, checks the run's state before it
sends anything, and, a daemon, does not hold the process.

A run cancelled just as it ends stays Cancelling for good: Prefect lets a Cancelling run go
only to Cancelled, so the engine's final state is refused and it exits 1 (`UnfinishedRun`),
the worker's Crashed is refused too, and the worker, whose run has ended, no longer watches
it. So when the engine fails and its run is still Cancelling, the run is marked Cancelled
here: what it was asked to be. An engine that succeeds costs nothing more.

The fork server runs `main` in each engine it forks; agent.launch execs this module when
there is no fork server.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import sys
import uuid
from collections.abc import Iterator
from typing import Any

ENDED_WHILE_CANCELLING = "Cancelled: the run was being cancelled as its engine ended"


def settle_cancelling(run_id: str) -> bool:
    """Mark the run Cancelled if it is Cancelling; whether it was. Never raises: with the
    server away, the run is left as it is (as it would be without this)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(uuid.UUID(run_id))
            if run.state is None or run.state.type != StateType.CANCELLING:
                return False
            client.set_flow_run_state(run.id, Cancelled(message=ENDED_WHILE_CANCELLING))
            return True
    except Exception as error:
        print(
            f"agent.engine: flow run {run_id}: its cancellation was not settled: {error}",
            file=sys.stderr,
            flush=True,
        )
        return False


def heartbeats_not_joined() -> None:
    """Make Prefect's flow engines stop their heartbeat thread without waiting for it."""
    from prefect import flow_engine

    original = flow_engine._send_heartbeats
    if getattr(original, "not_joined", False):
        return

    @contextlib.contextmanager
    def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Iterator[None]:
        with original(engine, join_on_exit=False):
            yield

    send_heartbeats.not_joined = True  # type: ignore[attr-defined]
    flow_engine._send_heartbeats = send_heartbeats


def main() -> None:
    """Run the engine as `python -m prefect.engine` does; settle a cancellation if it fails."""
    from agent import outages, tls

    tls.install()  # a no-op in a fork server's engine, which has it already
    outages.install()  # as tls
    heartbeats_not_joined()
    succeeded = False
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        succeeded = True
    except SystemExit as done:
        succeeded = done.code in (None, 0)
        raise
    finally:
        run_id = os.environ.get("PREFECT__FLOW_RUN_ID")
        if not succeeded and run_id:
            settle_cancelling(run_id)


if __name__ == "__main__":
    main()
