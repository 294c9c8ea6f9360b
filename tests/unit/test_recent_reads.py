"""agent.recent_reads: the worker's second read of a deployment (or flow) within a second is
answered from the first, as a copy of its own; older or failed reads are asked again."""

import asyncio
import uuid

import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import Flow
from prefect.client.schemas.responses import DeploymentResponse
from prefect.exceptions import ObjectNotFound

from agent import recent_reads
from agent.recent_reads import RecentReads


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def deployment(deployment_id: uuid.UUID) -> DeploymentResponse:
    return DeploymentResponse(
        id=deployment_id,
        name="monthly",
        flow_id=uuid.uuid4(),
        job_variables={"command": "python -m agent.launch", "env": {"A": "1"}},
    )


def test_a_read_within_the_window_is_the_first_s_copy_and_a_later_one_is_asked_again() -> None:
    clock = Clock()
    reads = RecentReads(seconds=1.0, clock=clock)
    deployment_id = uuid.uuid4()
    asked: list[uuid.UUID] = []

    async def read() -> DeploymentResponse:
        asked.append(deployment_id)
        return deployment(deployment_id)

    async def scenario() -> None:
        first = await reads.get("read_deployment", deployment_id, read)
        # Prefect's worker merges a run's env into the deployment's, in place.
        first.job_variables["env"]["RUN"] = "first run's"
        clock.now += 0.5
        second = await reads.get("read_deployment", deployment_id, read)
        assert len(asked) == 1
        assert second.id == deployment_id and second.job_variables["env"] == {"A": "1"}
        second.job_variables["env"]["RUN"] = "second run's"
        third = await reads.get("read_deployment", deployment_id, read)
        assert third.job_variables["env"] == {"A": "1"} and len(asked) == 1
        # Another object, or the same one once the window has passed: read again.
        await reads.get("read_flow", deployment_id, read)
        assert len(asked) == 2
        clock.now += 1.0
        await reads.get("read_deployment", deployment_id, read)
        assert len(asked) == 3

    asyncio.run(scenario())


def test_reads_asked_for_while_one_is_on_its_way_wait_for_it() -> None:
    clock = Clock()
    reads = RecentReads(seconds=1.0, clock=clock)
    deployment_id = uuid.uuid4()
    asked = 0
    answer = asyncio.Event()

    async def slow() -> DeploymentResponse:
        nonlocal asked
        asked += 1
        await answer.wait()
        return deployment(deployment_id)

    async def scenario() -> None:
        impatient = asyncio.create_task(reads.get("read_deployment", deployment_id, slow))
        waiting = [
            asyncio.create_task(reads.get("read_deployment", deployment_id, slow)) for _ in range(3)
        ]
        await asyncio.sleep(0.05)
        impatient.cancel()  # its caller goes away: the others' read goes on
        await asyncio.sleep(0.05)
        answer.set()
        copies = await asyncio.gather(*waiting)
        assert asked == 1
        assert all(c.id == deployment_id for c in copies)
        copies[0].job_variables["env"]["RUN"] = "mine"  # each a copy of its own
        assert copies[1].job_variables["env"] == {"A": "1"}
        with pytest.raises(asyncio.CancelledError):
            await impatient
        await reads.get("read_deployment", deployment_id, slow)
        assert asked == 1  # and kept, as a read of its own would be

    asyncio.run(scenario())


def test_a_read_that_fails_fails_every_caller_that_waited_for_it_and_is_not_kept() -> None:
    reads = RecentReads(seconds=1.0, clock=Clock())
    calls = 0

    async def gone() -> DeploymentResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise ObjectNotFound(http_exc=Exception("404"))

    async def scenario() -> None:
        object_id = uuid.uuid4()
        results = await asyncio.gather(
            *(reads.get("read_deployment", object_id, gone) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, ObjectNotFound) for r in results)
        assert calls == 1
        with pytest.raises(ObjectNotFound):  # a deployment that is gone is asked again
            await reads.get("read_deployment", object_id, gone)
        assert calls == 2

    asyncio.run(scenario())


def test_install_answers_the_client_s_reads_from_recent_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, uuid.UUID]] = []

    async def read_deployment(self: PrefectClient, deployment_id: uuid.UUID) -> DeploymentResponse:
        asked.append(("deployment", deployment_id))
        return deployment(deployment_id)

    async def read_flow(self: PrefectClient, flow_id: uuid.UUID) -> Flow:
        asked.append(("flow", flow_id))
        return Flow(id=flow_id, name="load-data")

    # Stand-ins for the server's answers; Prefect's own methods again after the test.
    monkeypatch.setattr(PrefectClient, "read_deployment", read_deployment)
    monkeypatch.setattr(PrefectClient, "read_flow", read_flow)
    monkeypatch.delattr(PrefectClient, "_agent_recent_reads", raising=False)
    monkeypatch.setattr(PrefectClient, "_agent_recent_reads", None, raising=False)
    reads = recent_reads.install(RecentReads(seconds=60))
    assert recent_reads.install() is reads  # once
    client = PrefectClient("http://127.0.0.1:1/api")
    deployment_id, flow_id = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        for _ in range(3):
            assert (await client.read_deployment(deployment_id)).id == deployment_id
            assert (await client.read_flow(flow_id)).name == "load-data"

    asyncio.run(scenario())
    assert asked == [("deployment", deployment_id), ("flow", flow_id)]
