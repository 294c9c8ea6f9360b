"""`python -m agent.engine`: a flow run's engine. Prefect's own (`python -m prefect.engine`),
and, when it fails, one repair as it exits.

A run cancelled just as it ends stays Cancelling for good: Prefect lets a Cancelling run go
only to Cancelled, so the engine's final state is refused and it exits 1 (`UnfinishedRun`),
the worker's Crashed is refused too, and the worker, whose run has ended, no longer watches
it. So when the engine fails and its run is still Cancelling, the run is marked Cancelled
here: what it was asked to be. An engine that succeeds costs nothing more.

The fork server runs `main` in each engine it forks; agent.launch execs this module when
there is no fork server.
"""

from __future__ import annotations

import os
import runpy
import sys
import uuid

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


def main() -> None:
    """Run the engine as `python -m prefect.engine` does; settle a cancellation if it fails."""
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
